"""Metric curves of a run as one PNG: one panel per metric, with epoch markers.

Used by ``fanlog plot`` and ``fanlog demo``. matplotlib is imported only here, and
with the non-interactive Agg backend, so plotting works on a headless HPC node.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fanlog.reader import MetricRow, RunData

PANEL_WIDTH = 4.2
"""Inches per panel column."""
PANEL_HEIGHT = 3.0
MAX_COLUMNS = 3


def select_keys(available: Sequence[str], patterns: Iterable[str] | None) -> list[str]:
    """The metric keys matching `patterns` (exact names or shell globs such as ``train/*``).

    Raises a ValueError naming the available keys when a pattern matches nothing, so a
    typo on the command line is a clear error rather than an empty plot.
    """
    if not patterns:
        return list(available)
    chosen: list[str] = []
    for pattern in patterns:
        matched = [k for k in available if k == pattern or fnmatch.fnmatchcase(k, pattern)]
        if not matched:
            known = ", ".join(available) or "(none)"
            raise ValueError(f"no metric matches {pattern!r}; metrics in this run: {known}")
        chosen.extend(k for k in matched if k not in chosen)
    return chosen


def metric_keys(rows: Iterable[MetricRow]) -> list[str]:
    """Metric keys in the order they were first logged."""
    return list(dict.fromkeys(row.key for row in rows))


def epoch_starts(rows: Sequence[MetricRow]) -> list[tuple[int, int]]:
    """(step, epoch) where a new epoch begins in one metric's rows (in logging order)."""
    starts: list[tuple[int, int]] = []
    previous: int | None = None
    for row in rows:
        if row.epoch is None:
            continue
        if previous is not None and row.epoch != previous:
            starts.append((row.step, row.epoch))
        previous = row.epoch
    return starts


def plot_run(
    run_data: RunData,
    keys: Iterable[str] | None = None,
    output: str | os.PathLike[str] = "curves.png",
    title: str | None = None,
    dpi: int = 100,
) -> str:
    """Draw the metrics of `run_data` into a PNG and return its absolute path.

    Args:
        run_data: what :func:`fanlog.read_run` returned.
        keys: metric names or glob patterns; default every metric, in logging order.
        output: the PNG file to write (parent directories are created).
        title: figure title; default the run name.
        dpi: resolution of the PNG.

    Each metric gets its own panel (x: step, y: value), one line per rank. Dashed
    vertical lines mark where a new epoch begins; epoch-level points (logged without
    ``batch_idx``) are drawn as dots. NaN and ±inf values are counted in the panel title.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    rows = run_data.metrics
    chosen = select_keys(metric_keys(rows), keys)
    if not chosen:
        raise ValueError("this run has no metrics to plot")
    columns = min(MAX_COLUMNS, len(chosen))
    panel_rows = math.ceil(len(chosen) / columns)
    figure, axes = plt.subplots(
        panel_rows,
        columns,
        figsize=(PANEL_WIDTH * columns, PANEL_HEIGHT * panel_rows),
        squeeze=False,
    )
    try:
        for index, key in enumerate(chosen):
            _draw_panel(axes[index // columns][index % columns], key, [r for r in rows if r.key == key])
        for index in range(len(chosen), panel_rows * columns):
            axes[index // columns][index % columns].set_visible(False)
        figure.suptitle(title if title is not None else _run_title(run_data))
        figure.tight_layout()
        path = os.path.abspath(os.fspath(output))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        figure.savefig(path, format="png", dpi=dpi)
    finally:
        plt.close(figure)
    return path


def _draw_panel(ax: Any, key: str, rows: list[MetricRow]) -> None:
    from matplotlib.ticker import MaxNLocator

    ranks = sorted({r.rank for r in rows})
    for rank in ranks:
        mine = [r for r in rows if r.rank == rank]
        label = f"rank {rank}" if len(ranks) > 1 else None
        epoch_level = all(r.batch_idx is None for r in mine)
        ax.plot(
            [r.step for r in mine],
            [r.value for r in mine],
            label=label,
            marker="o" if epoch_level or len(mine) <= 20 else None,
            markersize=3,
            linewidth=1.2,
        )
    for step, epoch in epoch_starts([r for r in rows if r.rank == ranks[0]]):
        ax.axvline(step, color="0.6", linestyle="--", linewidth=0.8)
        ax.annotate(
            f"e{epoch}",
            (step, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            color="0.4",
            ha="left",
            va="top",
            xytext=(2, -2),
            textcoords="offset points",
        )
    hidden = sum(1 for r in rows if not math.isfinite(r.value))
    # NaN and ±inf are kept in the journal but cannot be drawn: say so instead of hiding them.
    ax.set_title(f"{key} ({hidden} non-finite not drawn)" if hidden else key, fontsize=10)
    if hidden == len(rows):
        ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", color="0.4")
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are integers
    steps = {r.step for r in rows}
    if len(steps) == 1:  # one step: widen the axis so that integer ticks exist
        only = steps.pop()
        ax.set_xlim(only - 1, only + 1)
    ax.grid(True, alpha=0.3)
    if len(ranks) > 1:
        ax.legend(fontsize=7)


def _run_title(run_data: RunData) -> str:
    meta = run_data.meta.get(0) or next(iter(run_data.meta.values()), {})
    return str(meta.get("run_name") or meta.get("run_id") or "fanlog run")
