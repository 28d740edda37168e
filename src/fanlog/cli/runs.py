"""`fanlog ls`, `show`, `plot` and `export`: look at runs from their journals, no tracker needed.

Everything here reads the per-rank SQLite journals (read-only, through
:mod:`fanlog.journal` and :func:`fanlog.read_run`), so it works on an offline HPC node, on a
run that is still going, and on a run whose trackers never received anything.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import IO, Any

import click

from fanlog.errors import BadJournalError
from fanlog.journal import JournalBusyError, unreadable
from fanlog.journal.layout import RunNotFoundError, journal_label, journal_paths, rank_of, resolve_run
from fanlog.journal.summary import journal_summary, summary_or_error
from fanlog.reader import RunData, read_run

EXPORT_FORMATS = ("csv", "parquet", "jsonl")
EXPORT_COLUMNS = ("run_id", "rank", "kind", "key", "step", "epoch", "batch_idx", "time", "value")


# --------------------------------------------------------------------------- run lookup
def load_run(run: str, savedir: str, rank: int | None = None, kinds: list[str] | None = None) -> RunData:
    """Read a run (all ranks, or one) or fail with a message fit for the command line."""
    try:
        path = resolve_run(run, savedir)
    except RunNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="RUN") from None
    try:
        data = read_run(path, kinds=kinds)
    except (FileNotFoundError, BadJournalError, JournalBusyError) as exc:
        raise click.ClickException(str(exc)) from None
    if rank is None:
        return data
    if rank not in data.meta:
        raise click.ClickException(f"rank {rank} is not in this run; ranks: {sorted(data.meta)}")
    return replace(
        data,
        paths=[p for p in data.paths if rank_of(p) == rank],
        meta={rank: data.meta[rank]},
        records=[r for r in data.records if r.rank == rank],
        rejected=[r for r in data.rejected if r.rank == rank],
    )


# --------------------------------------------------------------------------- summaries
def _summary_or_exit(path: str) -> dict[str, Any]:
    """A journal's summary, or a command-line error naming the file."""
    try:
        return journal_summary(path)
    except BadJournalError as exc:
        raise click.ClickException(str(exc)) from None
    except sqlite3.Error as exc:
        raise click.ClickException(str(unreadable(path, exc))) from None


def metric_stats(data: RunData) -> list[dict[str, Any]]:
    """Per metric (and rank): count, last value and its step, min and max (NaN ignored)."""
    grouped: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for row in data.metrics:
        grouped.setdefault((row.key, row.rank), []).append((row.step, row.value))
    stats = []
    for (key, rank), points in grouped.items():
        finite = [v for _, v in points if not math.isnan(v)]
        stats.append(
            {
                "key": key,
                "rank": rank,
                "count": len(points),
                "last_step": points[-1][0],
                "last": points[-1][1],
                "min": min(finite) if finite else math.nan,
                "max": max(finite) if finite else math.nan,
            }
        )
    return stats


# --------------------------------------------------------------------------- formatting
def _when(timestamp: Any) -> str:
    if not isinstance(timestamp, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _rank(summary: dict[str, Any]) -> str:
    """The rank, and which of its journals when it has several ('0', '0#2', ...)."""
    return f"{summary['rank']}{journal_label(summary['journal'])}"


def _records(summary: dict[str, Any]) -> str:
    unstored = summary.get("unstored")
    return f"{summary['records']} (+{unstored} unstored)" if unstored else str(summary["records"])


def _delivery(trackers: list[dict[str, Any]]) -> str:
    parts = []
    for tracker in trackers:
        if tracker["in_journal"]:
            parts.append(f"{tracker['name']} stored")
            continue
        rejected = tracker.get("rejected", 0)
        mark = "" if tracker["delivered"] + rejected >= tracker["total"] else " PENDING"
        if rejected:
            mark += f" REJECTED {rejected}"
        if tracker["error"]:
            mark += " ERROR"
        parts.append(f"{tracker['name']} {tracker['delivered']}/{tracker['total']}{mark}")
    return ", ".join(parts) or "-"


def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Plain aligned columns: readable in a terminal, in a SLURM log, and by `grep`/`awk`."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _json_out(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str, allow_nan=True))


# --------------------------------------------------------------------------- commands
savedir_option = click.option(
    "--savedir",
    default="mllogs",
    show_default=True,
    envvar="FANLOG_SAVEDIR",
    show_envvar=True,
    help="Where to look up RUN when it is a run id rather than a path.",
)
rank_option = click.option("--rank", type=int, default=None, help="Only this rank (default: every rank).")


@click.command("ls")
@click.argument("savedir", default="mllogs", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def ls_command(savedir: str, as_json: bool) -> None:
    """List the runs under SAVEDIR (default: mllogs), one line per rank.

    Shows the run id, rank, start time, status (running, finished, failed, killed, or
    interrupted when the process died without closing the run), record counts and, per
    tracker, how many of its records were delivered. A rank written by several loggers or
    processes has one line per journal: rank 0#2 is journal.2.sqlite of rank 0.
    """
    try:
        paths = journal_paths(savedir)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    summaries = sorted(
        (summary_or_error(p) for p in paths),
        key=lambda s: (s["started"] or 0.0, s["run_id"] or "", s["rank"]),
    )
    if as_json:
        _json_out(summaries)
        return
    rows = [
        (s["run_id"], _rank(s), _when(s["started"]), s["status"], _records(s), _delivery(s["trackers"]))
        for s in summaries
    ]
    click.echo(format_table(("RUN", "RANK", "STARTED", "STATUS", "RECORDS", "DELIVERY"), rows))


@click.command("show")
@click.argument("run", default="mllogs")
@savedir_option
@rank_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def show_command(run: str, savedir: str, rank: int | None, as_json: bool) -> None:
    """Show one run: its params and the last, min and max of each metric.

    RUN is a run directory, a rank directory, a journal file, a savedir (its latest run),
    or a run id (or a unique prefix of one) under --savedir.
    """
    data = load_run(run, savedir, rank, kinds=["metric", "param"])
    summaries = [_summary_or_exit(p) for p in data.paths]
    summaries = [s for s in summaries if s["rank"] in data.meta]
    stats = metric_stats(data)
    if as_json:
        _json_out(
            {
                "run": summaries,
                "params": data.params,
                "metrics": stats,
                "rejected": [r._asdict() for r in data.rejected],
            }
        )
        return
    first = summaries[0] if summaries else {}
    name = first.get("run_name")
    click.echo(f"run        {first.get('run_id')}" + (f"  ({name})" if name != first.get("run_id") else ""))
    if first.get("experiment_name"):
        click.echo(f"experiment {first['experiment_name']}")
    for s in summaries:
        duration = (s["ended"] - s["started"]) if s["ended"] and s["started"] else None
        took = f", {duration:.1f} s" if duration is not None else ""
        click.echo(
            f"rank {_rank(s):<5} {s['status']}, started {_when(s['started'])}{took}, "
            f"{_records(s)} records; {_delivery(s['trackers'])}"
        )
    _echo_rejected(data)
    click.echo("")
    click.echo("params" if data.params else "params: none")
    if data.params:
        click.echo(format_table(("KEY", "VALUE"), sorted(data.params.items())))
    click.echo("")
    if not stats:
        click.echo("metrics: none")
        return
    several = len({s["rank"] for s in stats}) > 1
    header = ("METRIC", *(("RANK",) if several else ()), "N", "LAST", "STEP", "MIN", "MAX")
    rows = [
        (
            s["key"],
            *((s["rank"],) if several else ()),
            s["count"],
            _number(s["last"]),
            s["last_step"],
            _number(s["min"]),
            _number(s["max"]),
        )
        for s in stats
    ]
    click.echo("metrics")
    click.echo(format_table(header, rows))


def _echo_rejected(data: RunData) -> None:
    """The records a tracker refused for good, if any: what, where, and why."""
    if not data.rejected:
        return
    several = len({r.rank for r in data.rejected}) > 1
    header = ("SEQ", *(("RANK",) if several else ()), "KIND", "KEY", "TRACKER", "REASON")
    rows = [
        (r.seq, *((r.rank,) if several else ()), r.kind, r.key, r.tracker, _short(r.reason, 120))
        for r in data.rejected
    ]
    click.echo("")
    click.echo(
        f"rejected: {len(rows)} record(s) a tracker refused for good (kept here; "
        "`fanlog sync --retry-rejected` sends them again)"
    )
    click.echo(format_table(header, rows))


def _short(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@click.command("plot")
@click.argument("run", default="mllogs")
@click.option(
    "-k",
    "--key",
    "keys",
    multiple=True,
    help="A metric to plot (repeatable; shell globs such as 'train/*' work). Default: all.",
)
@click.option(
    "-o",
    "--output",
    default="curves.png",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The PNG to write.",
)
@savedir_option
@rank_option
@click.option("--title", default=None, help="Figure title (default: the run name).")
@click.option(
    "--dpi",
    default=100,
    show_default=True,
    type=click.IntRange(20, 600),
    help="Resolution of the PNG (a panel is 4.2 x 3 inches).",
)
def plot_command(
    run: str, keys: tuple[str, ...], output: str, savedir: str, rank: int | None, title: str | None, dpi: int
) -> None:
    """Plot a run's metrics to a PNG: one panel per metric, dashed lines at epoch starts.

    RUN is a path (run, rank or savedir) or a run id under --savedir. Needs matplotlib
    (pip install 'fanlog[plot]').
    """
    data = load_run(run, savedir, rank, kinds=["metric"])
    try:
        from fanlog.plots import plot_run

        path = plot_run(data, keys=list(keys) or None, output=output, title=title, dpi=dpi)
    except ImportError as exc:
        raise click.ClickException(f"plotting needs matplotlib: pip install 'fanlog[plot]' ({exc})") from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(path)


@click.command("export")
@click.argument("run", default="mllogs")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="csv", show_default=True)
@click.option(
    "-o",
    "--output",
    default="-",
    show_default=True,
    help="File to write; '-' is stdout (csv and jsonl only).",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    default=("metric",),
    show_default=True,
    help="Kinds to export (repeatable); 'all' for every kind.",
)
@savedir_option
@rank_option
def export_command(
    run: str, fmt: str, output: str, kinds: tuple[str, ...], savedir: str, rank: int | None
) -> None:
    """Export a run's records as CSV, Parquet or JSON lines, one row per record.

    Columns: run_id, rank, kind, key, step, epoch, batch_idx, time, value. With only
    metrics, value is a number; with other kinds it is JSON text in CSV and Parquet,
    and the JSON value in JSON lines (binary payloads become their size, artifacts their
    path in the run directory).
    """
    wanted = None if "all" in kinds else list(kinds)
    data = load_run(run, savedir, rank, kinds=wanted)
    if fmt == "parquet" and output == "-":
        raise click.UsageError("parquet is a binary format: give a file with -o FILE")
    run_ids = {r: str(m.get("run_id")) for r, m in data.meta.items()}
    numeric = wanted == ["metric"]
    rows = [_export_row(record, run_ids, as_text=(fmt != "jsonl" and not numeric)) for record in data.records]
    if fmt == "parquet":
        _write_parquet(rows, output)
    elif output == "-":
        _write_text(rows, fmt, sys.stdout)
    else:
        with open(output, "w", newline="", encoding="utf-8") as stream:
            _write_text(rows, fmt, stream)
    if output != "-":
        click.echo(f"{len(rows)} records -> {os.path.abspath(output)}", err=True)


def _export_value(record: Any) -> Any:
    """A JSON-friendly form of a record's value."""
    value = record.value
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": len(value)}
    if hasattr(value, "tolist"):  # a histogram's ndarray
        return value.tolist()
    return value


def _export_row(record: Any, run_ids: dict[int, str], as_text: bool) -> dict[str, Any]:
    value = _export_value(record)
    if as_text:
        value = json.dumps(value, allow_nan=True)  # one column type when kinds are mixed
    return {
        "run_id": run_ids.get(record.rank, ""),
        "rank": record.rank,
        "kind": record.kind,
        "key": record.key,
        "step": record.step,
        "epoch": record.epoch,
        "batch_idx": record.batch_idx,
        "time": record.time,
        "value": value,
    }


def _write_text(rows: list[dict[str, Any]], fmt: str, stream: IO[str]) -> None:
    if fmt == "jsonl":
        for row in rows:
            stream.write(json.dumps(row, allow_nan=True) + "\n")
        return
    writer = csv.DictWriter(stream, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _write_parquet(rows: list[dict[str, Any]], output: str) -> None:
    try:
        import pandas as pd
    except ImportError as exc:
        raise click.ClickException(
            f"parquet export needs pandas and pyarrow: pip install 'fanlog[pandas]' ({exc})"
        ) from None
    frame = pd.DataFrame(rows, columns=list(EXPORT_COLUMNS))
    for column in ("epoch", "batch_idx"):
        frame[column] = frame[column].astype("Int64")  # nullable: epoch-level rows have no batch_idx
    try:
        frame.to_parquet(output, index=False)
    except ImportError as exc:
        raise click.ClickException(
            f"parquet export needs pyarrow: pip install 'fanlog[pandas]' ({exc})"
        ) from None
