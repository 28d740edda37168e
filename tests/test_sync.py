"""`fanlog sync`: a journal delivered later to a real tracker, exactly once.

Every test writes a real journal with a real logger, syncs it to a real tracker (a
`mlflow server` on 127.0.0.1, TensorBoard event files) and reads back what the
tracker stored with the tracker's own reader. No mocks.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import fanlog
from fanlog.backends.journal import JournalLogger
from fanlog.cli import cli
from fanlog.delivery.sync import SyncError, sync

pytestmark = pytest.mark.slow


def make_run(savedir: Path, job_id: str, metrics: int = 30, extras: bool = True) -> str:
    """A journal-only run (the air-gapped case): metrics at steps, params and every file kind."""
    logger = JournalLogger(
        savedir=str(savedir), log_freq="batch", job_id=job_id, experiment_name=f"exp-{job_id}"
    )
    logger.create_logger_context(rank=0)
    for step in range(metrics):
        logger.log(1.0 / (step + 1), "train/loss", step=step)
        logger.log(float(step), "train/acc", step=step)
    if extras:
        logger.save_hyperparameters({"lr": 0.01, "optim": {"name": "adam"}})
        logger.log("some notes", "notes.txt", kind="text")
        logger.log({"layers": 3}, "config.json", kind="dict")
        logger.log(np.full((4, 5, 3), 200, dtype=np.uint8), "sample.png", kind="image")
        artifact = savedir.parent / f"{job_id}-weights.bin"
        artifact.write_bytes(b"\x00\x01weights")
        logger.log(str(artifact), "ckpt/weights.bin", kind="artifact")
        logger.log(np.arange(5.0), "hist", kind="histogram")  # MLflow does not store it
    path = logger.journal_path
    assert logger.destroy_logger_context()
    assert path is not None
    return path


def mlflow_run(url: str, job_id: str) -> Any:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(f"exp-{job_id}")
    if experiment is None:
        return client, None
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`fanlog.run_id` = '{job_id}'")
    assert len(runs) <= 1, "sync must reattach to one MLflow run, never create a second"
    return client, (runs[0] if runs else None)


def journal_records(path: str, kind: str, key: str) -> list[tuple[int, float, float]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute(
            "SELECT step, num, time FROM records WHERE kind = ? AND key = ? ORDER BY seq", (kind, key)
        ).fetchall()


def cursor_of(path: str, name: str) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT seq FROM delivery WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def test_sync_delivers_every_kind_to_a_tracker_the_run_never_used(tmp_path: Path, mlflow_server: Any) -> None:
    path = make_run(tmp_path / "sd", "never-used")
    report = fanlog.sync(tmp_path / "sd", to="mlflow", tracking_uri=mlflow_server.url, progress=False)
    assert report.ok, report.summary()
    assert report.journals[0].cursor == "sync:mlflow"
    assert report.journals[0].unsupported == {"histogram": 1}

    client, run = mlflow_run(mlflow_server.url, "never-used")
    assert run is not None
    history = client.get_metric_history(run.info.run_id, "train/loss")
    stored = sorted((m.step, m.value, m.timestamp) for m in history)
    expected = sorted((s, v, int(t * 1000)) for s, v, t in journal_records(path, "metric", "train/loss"))
    assert stored == expected  # steps, values and wall times survive the trip
    assert run.data.params == {"lr": "0.01", "optim/name": "adam"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"notes.txt", "config.json", "sample.png", "ckpt"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "config.json", str(tmp_path / "dl"))
    assert json.loads(Path(local).read_text()) == {"layers": 3}
    weights = client.download_artifacts(run.info.run_id, "ckpt/weights.bin", str(tmp_path / "dl"))
    assert Path(weights).read_bytes() == b"\x00\x01weights"
    assert run.info.status == "FINISHED"  # the run's own end status


def test_sync_twice_sends_nothing_twice(tmp_path: Path, mlflow_server: Any) -> None:
    path = make_run(tmp_path / "sd", "twice", metrics=40, extras=False)
    first = sync(path, to="mlflow", tracking_uri=mlflow_server.url, progress=False)
    second = sync(path, to="mlflow", tracking_uri=mlflow_server.url, progress=False)
    assert first.sent == 80
    assert second.sent == 0 and second.ok
    client, run = mlflow_run(mlflow_server.url, "twice")
    assert len(client.get_metric_history(run.info.run_id, "train/acc")) == 40
    assert cursor_of(path, "sync:mlflow") == 80


def test_dry_run_reports_and_changes_nothing(tmp_path: Path, mlflow_server: Any) -> None:
    path = make_run(tmp_path / "sd", "dry")
    report = sync(path, to="mlflow", tracking_uri=mlflow_server.url, dry_run=True, progress=False)
    assert report.pending == 60 + 2 + 4  # metrics, params, text + dict + image + artifact
    assert report.journals[0].pending["metric"] == 60
    assert report.journals[0].pending["param"] == 2
    assert "would send" in report.summary()
    assert cursor_of(path, "sync:mlflow") == 0
    _, run = mlflow_run(mlflow_server.url, "dry")
    assert run is None  # nothing was opened on the tracker

    result = CliRunner().invoke(
        cli, ["sync", path, "--to", "mlflow", "--dry-run", "--tracking-uri", mlflow_server.url]
    )
    assert result.exit_code == 0, result.output
    assert "would send 66 record(s)" in result.output


def test_sync_killed_mid_way_then_rerun_delivers_each_record_once(tmp_path: Path, mlflow_server: Any) -> None:
    """A `fanlog sync` subprocess is SIGKILLed after some batches; the rerun completes it."""
    steps = 400
    path = make_run(tmp_path / "sd", "killed-sync", metrics=steps, extras=False)
    total = 2 * steps
    command = [
        sys.executable,
        "-m",
        "fanlog.cli",
        "sync",
        path,
        "--to",
        "mlflow",
        "--tracking-uri",
        mlflow_server.url,
        "--batch-size",
        "10",
        "--no-progress",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    seen = 0
    while time.monotonic() < deadline and process.poll() is None:
        seen = cursor_of(path, "sync:mlflow")
        if seen >= 30:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    killed_at = cursor_of(path, "sync:mlflow")
    assert 0 < killed_at < total, f"the kill must land mid-way (cursor {killed_at} of {total})"

    report = sync(path, to="mlflow", tracking_uri=mlflow_server.url, progress=False)
    assert report.ok, report.summary()
    assert report.journals[0].start == killed_at
    assert report.sent == total - killed_at  # only what the cursor says is missing
    client, run = mlflow_run(mlflow_server.url, "killed-sync")
    for key in ("train/loss", "train/acc"):
        steps_stored = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps_stored) == list(range(steps)), key  # each step exactly once
    assert run.info.status == "FINISHED"


def test_sigterm_stops_a_sync_cleanly_and_the_rerun_finishes(tmp_path: Path) -> None:
    """SIGTERM finishes the batch in flight and saves the cursor (exit 130); TensorBoard,
    which appends every event it gets, then holds each record exactly once."""
    steps = 4000
    path = make_run(tmp_path / "sd", "term-sync", metrics=steps, extras=False)
    logdir = tmp_path / "tb"
    command = [
        sys.executable,
        "-m",
        "fanlog.cli",
        "sync",
        path,
        "--to",
        "tensorboard",
        "--logdir",
        str(logdir),
        "--batch-size",
        "10",
        "--no-progress",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if cursor_of(path, "sync:tensorboard") >= 50:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    stopped_at = cursor_of(path, "sync:tensorboard")
    assert process.returncode == 130, output
    assert "interrupted" in output
    assert 0 < stopped_at < 2 * steps

    report = sync(path, to="tensorboard", logdir=str(logdir), progress=False)
    assert report.ok and report.sent == 2 * steps - stopped_at
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    stored = [e.step for e in events.Scalars("train/loss")]
    assert sorted(stored) == list(range(steps))


def test_progress_bar_for_long_syncs(tmp_path: Path) -> None:
    path = make_run(tmp_path / "sd", "progress", metrics=1200, extras=False)
    result = CliRunner().invoke(cli, ["sync", path, "--to", "tensorboard", "--logdir", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    assert "sync rank-0 → tensorboard" in result.output  # the bar's label (no tty: label only)
    assert "sent 2400 record(s)" in result.output
    quiet = CliRunner().invoke(
        cli, ["sync", path, "--to", "tensorboard", "--logdir", str(tmp_path / "tb"), "--no-progress"]
    )
    assert "sent 0 record(s)" in quiet.output and "→" not in quiet.output


def test_fanlog_sync_is_callable_and_a_concurrent_sync_is_refused(tmp_path: Path) -> None:
    import fanlog.delivery.sync  # importing the module must not break `fanlog.sync(...)`
    from fanlog.delivery.sync import _lock

    module = fanlog.sync  # the function, even after its module was imported

    path = make_run(tmp_path / "sd", "lock", metrics=3, extras=False)
    with _lock(os.path.dirname(path), "sync:tensorboard"), pytest.raises(SyncError, match="another"):
        fanlog.sync(path, to="tensorboard", logdir=str(tmp_path / "tb"), progress=False)
    report = module(path, to="tensorboard", logdir=str(tmp_path / "tb"), progress=False)
    assert report.sent == 6


def test_unknown_tracker_and_bad_option_are_clear_errors(tmp_path: Path) -> None:
    path = make_run(tmp_path / "sd", "bad", metrics=1, extras=False)
    result = CliRunner().invoke(cli, ["sync", path, "--to", "nosuchtracker"])
    assert result.exit_code != 0 and "unknown backend 'nosuchtracker'" in result.output
    result = CliRunner().invoke(cli, ["sync", path, "--to", "tensorboard", "-o", "colour=3"])
    assert result.exit_code != 0 and "colour" in result.output


def test_sync_to_offline_wandb_keeps_steps_and_sends_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W&B offline (nothing leaves the machine), read back from the run's .wandb file."""
    import glob

    from fanlog.backends.wandb import STEP_METRIC
    from support.wandb_log import read_transaction_log

    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    path = make_run(tmp_path / "sd", "to-wandb", metrics=5, extras=False)
    options = {"mode": "offline", "settings": {"x_disable_stats": True, "console": "off"}}
    report = sync(path, to="wandb", progress=False, **options)
    assert report.ok and report.sent == 10, report.summary()
    assert sync(path, to="wandb", progress=False, **options).sent == 0
    (run_file,) = glob.glob(
        str(tmp_path / "sd" / "wandb" / "**" / "offline-run-*" / "run-*.wandb"), recursive=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            records = read_transaction_log(run_file)
        except ValueError:
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        time.sleep(0.1)
    values = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            if "train/acc" in row:
                values[row[STEP_METRIC]] = row["train/acc"]
    assert values == {step: float(step) for step in range(5)}


def test_sync_to_an_unreachable_tracker_fails_cleanly_and_keeps_the_cursor(tmp_path: Path) -> None:
    from support.mlflow_server import free_port

    path = make_run(tmp_path / "sd", "unreachable", metrics=3, extras=False)
    dead = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["sync", path, "--to", "mlflow", "--tracking-uri", dead])
    assert result.exit_code == 1, result.output
    assert "FAILED: cannot open the mlflow run" in result.output
    assert cursor_of(path, "sync:mlflow") == 0  # everything is still to be sent next time
