"""Read back what a tracker stored, with the tracker's own reader (integration tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Series = list[tuple[int, float]]


def tensorboard_scalars(logdir: Path) -> dict[str, Series]:
    """Every scalar of every event file under `logdir`, with TensorBoard's EventAccumulator."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    found: dict[str, Series] = {}
    for folder in sorted({p.parent for p in logdir.rglob("events.out.tfevents.*")}):
        acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return found


def mlflow_run(url: str, experiment: str) -> tuple[Any, dict[str, Series]]:
    """The one run of `experiment` and its metric histories, ordered by step then time."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    (run,) = client.search_runs([exp.experiment_id])
    histories = {}
    for key in run.data.metrics:
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
        histories[key] = [(m.step, m.value) for m in history]
    return run, histories


def files_containing(root: Path, needle: str) -> list[str]:
    """Files under `root` whose bytes contain `needle`."""
    data = needle.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]
