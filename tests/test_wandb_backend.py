"""W&B backend, offline only: what fanlog logs, read back from W&B's own transaction log.

No mocks and no network: every run is a real offline W&B run (the wandb-core
service writes ``run-<id>.wandb``), read back as W&B's protobuf ``Record``
messages (``wandb.proto.wandb_internal_pb2``) by
``support.wandb_log.read_transaction_log``. wandb 0.31 ships no Python
reader for the file framing (the old ``wandb.sdk.internal.datastore`` is gone);
that function walks it, checking each chunk's CRC, and is tested here against a
file with records larger than one 32 KiB block.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fanlog.backends.wandb import (
    STEP_METRIC,
    WandBBackend,
    WandBLogger,
    has_credentials,
    resolve_mode,
)
from fanlog.errors import PartialDelivery
from fanlog.record import Record, RunInfo, RunStatus
from support.wandb_log import read_transaction_log

pytestmark = pytest.mark.slow  # every W&B run starts W&B's service process

QUIET = {
    "x_disable_stats": True,
    "x_disable_meta": True,
    "x_disable_machine_info": True,
    "console": "off",
    "disable_git": True,
    "disable_code": True,
    "x_save_requirements": False,
}


@pytest.fixture(autouse=True)
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials, every W&B directory under tmp, no error reporting: nothing leaves the box."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")


def read_complete(path: str, timeout: float) -> list[Any]:
    """The records of a finished run. ``run.finish()`` can return before the wandb-core
    service has written the file out, so wait (bounded) for the run's exit record."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = read_transaction_log(path)
        except ValueError:  # a chunk still being written
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has no exit record after {timeout} s")
        time.sleep(0.05)


class OfflineRun:
    """What one offline run stored, decoded from its .wandb file."""

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.path = path
        self.files_dir = os.path.join(os.path.dirname(path), "files")
        self.records = read_complete(path, timeout)

    def of(self, kind: str) -> list[Any]:
        return [getattr(r, kind) for r in self.records if r.WhichOneof("record_type") == kind]

    @property
    def run(self) -> Any:
        return self.of("run")[0]

    def rows(self) -> list[dict[str, Any]]:
        """History rows as {key: value}; nested keys joined with '/' like W&B's UI."""
        return [
            {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in history.item}
            for history in self.of("history")
        ]

    def series(self, key: str) -> list[tuple[int, Any]]:
        """(fanlog step, value) of every row that holds `key`."""
        return [(row[STEP_METRIC], row[key]) for row in self.rows() if key in row]

    def config(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for config in [self.run.config, *self.of("config")]:
            for item in config.update:
                key = "/".join(item.nested_key) or item.key
                if key != "_wandb":
                    found[key] = json.loads(item.value_json)
        return found

    def exit_code(self) -> int:
        return self.of("exit")[0].exit_code


def offline_runs(savedir: Path) -> list[OfflineRun]:
    pattern = str(savedir / "wandb" / "wandb" / "offline-run-*" / "run-*.wandb")
    paths = sorted(glob.glob(pattern), key=os.path.getmtime)  # a resumed run may sort first
    return [OfflineRun(p) for p in paths]


def info(tmp_path: Path, rank: int = 0, world_size: int = 1, name: str = "job") -> RunInfo:
    return RunInfo(
        run_id="job-1",
        run_name=name,
        rank=rank,
        world_size=world_size,
        run_dir=str(tmp_path / "runs" / f"rank-{rank}"),
    )


def rec(seq: int, kind: str, key: str, value: Any, step: int = 0, **options: Any) -> Record:
    return Record(seq=seq, kind=kind, key=key, value=value, step=step, time=1.7e9 + seq, options=options)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


# ---------------------------------------------------------------- mode, without any network
def test_mode_is_offline_without_credentials_and_online_with_them(tmp_path: Path) -> None:
    netrc_path = tmp_path / "netrc"
    env = {"NETRC": str(netrc_path)}
    assert not has_credentials(env)
    assert resolve_mode(None, environ=env) == "offline"
    netrc_path.write_text("machine api.wandb.ai\n  login user\n  password k" + "0" * 39 + "\n")
    netrc_path.chmod(0o600)
    assert has_credentials(env)
    assert resolve_mode(None, environ=env) == "online"
    assert resolve_mode(None, offline_mode=True, environ=env) == "offline"  # itwinai's flag
    assert resolve_mode(None, environ={**env, "WANDB_MODE": "dryrun"}) == "offline"
    assert resolve_mode("disabled", environ=env) == "disabled"
    other_host = {**env, "WANDB_BASE_URL": "https://wandb.example.org"}
    assert resolve_mode(None, environ=other_host) == "offline"  # the key is for another host
    assert resolve_mode(None, environ={"WANDB_API_KEY": "x" * 40, "NETRC": "/nonexistent"}) == "online"
    with pytest.raises(ValueError, match="mode must be one of"):
        resolve_mode("sometimes")
    with pytest.raises(ValueError, match="mode must be one of"):
        WandBLogger(mode="sometimes")


# ---------------------------------------------------------------- backend, batches in and out
def test_backend_merges_rows_and_keeps_every_step(tmp_path: Path) -> None:
    backend = WandBBackend(savedir=str(tmp_path), project_name="proj", settings=QUIET)
    backend.prepare()
    assert backend.mode == "offline"  # no credentials here: offline, decided without a probe
    backend.open(info(tmp_path))
    records = [rec(1, "param", "lr", 0.01), rec(2, "param", "model/depth", 4)]
    seq = 10
    for step in range(20):  # three metrics per step → one row per step
        for key in ("loss", "acc", "grad_norm"):
            records.append(rec(seq, "metric", key, step + {"loss": 0.1, "acc": 0.2}.get(key, 0.3), step=step))
            seq += 1
    # validation "in the past" and a restart from a checkpoint at step 15
    records += [rec(200, "metric", "val/loss", 1.5, step=5), rec(201, "metric", "val/loss", 1.2, step=10)]
    records += [rec(300 + s, "metric", "loss", 100.0 + s, step=s) for s in range(15, 20)]
    records.append(rec(400, "metric", "loss", 7.0, step=19))  # same key, same step: a new row
    backend.write(records)
    backend.close(RunStatus.FINISHED)

    (run,) = offline_runs(tmp_path)
    assert run.run.project == "proj"
    loss = run.series("loss")
    expected = [(s, pytest.approx(s + 0.1)) for s in range(20)]
    expected += [(s, 100.0 + s) for s in range(15, 20)] + [(19, 7.0)]
    assert loss == expected
    assert run.series("val/loss") == [(5, 1.5), (10, 1.2)]
    assert [s for s, _ in run.series("acc")] == list(range(20))
    assert len(run.rows()) == 20 + 2 + 5 + 1  # merged: not 60 + 8 rows
    assert run.config() == {"lr": 0.01, "model/depth": 4}
    metrics = run.of("metric")
    assert any(m.glob_name == "*" and m.step_metric == STEP_METRIC for m in metrics)
    assert run.exit_code() == 0


def test_backend_media_artifacts_and_models(tmp_path: Path) -> None:
    from fanlog.kinds.core import encode_png

    artifact_file = tmp_path / "report.csv"
    artifact_file.write_text("a,b\n1,2\n")
    model = torch.nn.Linear(3, 2)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    backend = WandBBackend(savedir=str(tmp_path), settings=QUIET)
    backend.prepare()
    backend.open(info(tmp_path))
    backend.write(
        [
            rec(1, "image", "samples", encode_png(np.zeros((3, 8, 12), np.float32)), step=2),
            rec(2, "figure", "curve", encode_png(np.full((5, 7, 3), 200, np.uint8)), step=2),
            rec(3, "histogram", "weights", np.arange(100.0), step=2, bins=10),
            rec(4, "text", "note", "hello", step=2),
            rec(40, "image", "broken", b"not a png", step=2),  # skipped with a warning, not retried
            rec(5, "dict", "summary", {"best": {"epoch": 3, "acc": 0.9}}, step=2),
            rec(6, "artifact", "reports/report.csv", str(artifact_file), step=2),
            rec(7, "model", "net", buffer.getvalue(), step=3),
            rec(8, "tag", "tag", "baseline"),
        ]
    )
    backend.close(RunStatus.FAILED)

    (run,) = offline_runs(tmp_path)
    (row,) = run.rows()
    assert row[STEP_METRIC] == 2
    assert (row["samples/_type"], row["samples/width"], row["samples/height"]) == ("image-file", 12, 8)
    assert (row["curve/width"], row["curve/height"]) == (7, 5)
    assert os.path.isfile(os.path.join(run.files_dir, row["samples/path"]))
    assert row["weights/_type"] == "histogram" and len(row["weights/values"]) == 10
    assert sum(row["weights/values"]) == 100
    assert row["note"] == "hello"
    assert not any(key.startswith("broken") for key in row)
    assert row["summary/best/acc"] == 0.9
    artifacts = {a.name: a for a in run.of("artifact")}
    assert artifacts["reports-report.csv"].type == "artifact"
    assert [c.path for c in artifacts["reports-report.csv"].manifest.contents] == ["report.csv"]
    assert artifacts["net"].type == "model"
    assert [c.path for c in artifacts["net"].manifest.contents] == ["net.pt"]
    assert json.loads(artifacts["net"].metadata)["step"] == 3
    assert run.exit_code() == 1
    assert backend._staging is not None and not os.path.exists(backend._staging)  # cleaned up


def test_backend_reports_partial_delivery(tmp_path: Path) -> None:
    """A record that fails mid-batch: the rows before it are stored and counted, not resent."""
    backend = WandBBackend(savedir=str(tmp_path), settings=QUIET)
    backend.prepare()
    backend.open(info(tmp_path))
    batch = [
        rec(1, "metric", "loss", 1.0, step=0),
        rec(2, "metric", "loss", 2.0, step=1),
        rec(3, "artifact", "gone", str(tmp_path / "deleted.bin"), step=1),
        rec(4, "metric", "loss", 3.0, step=2),
    ]
    with pytest.raises(PartialDelivery) as caught:
        backend.write(batch)
    assert caught.value.done == 2
    backend.write(batch[3:])  # what the dispatcher retries
    backend.close(RunStatus.FINISHED)
    (run,) = offline_runs(tmp_path)
    assert run.series("loss") == [(0, 1.0), (1, 2.0), (2, 3.0)]


def test_ranks_share_a_group(tmp_path: Path) -> None:
    for rank in (0, 1):
        backend = WandBBackend(savedir=str(tmp_path), settings=QUIET)
        backend.prepare()
        backend.open(info(tmp_path, rank=rank, world_size=2, name="job-42"))
        backend.write([rec(1, "metric", "loss", float(rank))])
        backend.close(RunStatus.FINISHED)
    runs = offline_runs(tmp_path)
    assert sorted((r.run.run_group, r.run.display_name, r.run.job_type) for r in runs) == [
        ("job-42", "job-42-rank0", "rank0"),
        ("job-42", "job-42-rank1", "rank1"),
    ]
    assert len({r.run.run_id for r in runs}) == 2


# ---------------------------------------------------------------- through the Logger
def test_logger_end_to_end(tmp_path: Path) -> None:
    """The user's API: journal → dispatcher → W&B offline run, steps and config intact."""
    logger = WandBLogger(
        savedir=str(tmp_path), project_name="e2e", log_freq="batch", settings=QUIET, run_name="trial"
    )
    with logger.start_logging():
        logger.save_hyperparameters({"lr": 3e-4, "optim": {"name": "adam", "betas": [0.9, 0.99]}})
        for step in range(200):
            logger.log_metrics({"train/loss": 1.0 / (step + 1), "train/lr": 3e-4}, step=step)
        for epoch_step in (50, 100, 150):  # validation after the fact
            logger.log(0.5, "val/loss", step=epoch_step)
        logger.log(torch.ones(2, 3, 5, 6), "inputs", kind="image")
        logger.log(torch.randn(1000), "acts", kind="histogram")
        logger.log("free text", "notes", kind="text")
        logger.log(torch.nn.Linear(2, 2), "final", kind="model")
        assert logger.flush(timeout=120)
        assert logger.backend.mode == "offline"
    assert logger.delivery_errors() == {}
    (run,) = offline_runs(tmp_path)
    assert run.run.display_name == "trial"
    assert [s for s, _ in run.series("train/loss")] == list(range(200))
    assert run.series("train/loss")[9] == (9, pytest.approx(0.1))
    assert run.series("val/loss") == [(50, 0.5), (100, 0.5), (150, 0.5)]
    assert len([r for r in run.rows() if "train/loss" in r]) == 200  # loss+lr merged per step
    config = run.config()
    assert config["lr"] == pytest.approx(3e-4)
    assert config["optim/name"] == "adam"
    media = [r for r in run.rows() if "inputs/_type" in r]
    assert media and (media[0]["inputs/width"], media[0]["inputs/height"]) == (12, 5)  # 1×2 grid
    assert any(r.get("acts/_type") == "histogram" for r in run.rows())
    assert [a.type for a in run.of("artifact")] == ["model"]
    assert run.exit_code() == 0


def test_resumed_run_reattaches_and_keeps_restarted_steps(tmp_path: Path) -> None:
    """A job restarted from a checkpoint logs steps again; W&B must not drop them."""
    first = WandBLogger(savedir=str(tmp_path), log_freq="batch", settings=QUIET, job_id="job-7")
    with first.start_logging():
        for step in range(10):
            first.log(float(step), "loss", step=step)
    second = WandBLogger(savedir=str(tmp_path), log_freq="batch", settings=QUIET, job_id="job-7")
    with second.start_logging():
        assert second.run_info is not None and second.run_info.resumed
        for step in range(6, 12):  # restarted from the checkpoint of step 6
            second.log(100.0 + step, "loss", step=step)
    runs = offline_runs(tmp_path)
    assert len(runs) == 2
    assert runs[0].run.run_id == runs[1].run.run_id  # the same W&B run, resumed
    loss = [pair for run in runs for pair in run.series("loss")]
    assert loss == [(s, float(s)) for s in range(10)] + [(s, 100.0 + s) for s in range(6, 12)]


def test_watch_logs_gradients(tmp_path: Path) -> None:
    logger = WandBLogger(savedir=str(tmp_path), log_freq="batch", settings=QUIET)
    with logger.start_logging():
        model = Net()
        logger.watch(model, log="all", log_freq=1)
        for step in range(3):
            model(torch.randn(4, 3)).sum().backward()
            logger.log(float(step), "loss", step=step)
            logger.flush(timeout=60)
    (run,) = offline_runs(tmp_path)
    keys = {key for row in run.rows() for key in row}
    # wandb prefixes "graph_<n>" when an earlier test of this process watched a model too
    assert any(re.match(r"gradients/(graph_\d+)?fc\.weight", key) for key in keys), sorted(keys)
    assert any(re.match(r"parameters/(graph_\d+)?fc\.weight", key) for key in keys), sorted(keys)
    assert [s for s, _ in run.series("loss")] == [0, 1, 2]


def test_watch_before_start_is_a_clear_error() -> None:
    from fanlog.errors import LoggerNotStartedError

    with pytest.raises(LoggerNotStartedError):
        WandBLogger().watch(Net())


def test_reader_handles_records_across_blocks_and_rejects_corruption(tmp_path: Path) -> None:
    """A 100 KB text spans several 32 KiB blocks; a flipped byte must be caught by the CRC."""
    text = "".join(chr(65 + i % 26) for i in range(100_000))
    backend = WandBBackend(savedir=str(tmp_path), settings=QUIET)
    backend.prepare()
    backend.open(info(tmp_path))
    backend.write([rec(1, "text", "long", text, step=4)])
    backend.close(RunStatus.FINISHED)
    (run,) = offline_runs(tmp_path)
    assert run.series("long") == [(4, text)]
    damaged = tmp_path / "damaged.wandb"
    data = bytearray(Path(run.path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad checksum"):
        read_transaction_log(str(damaged))
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        read_transaction_log(str(artifact_free_file(tmp_path)))


def artifact_free_file(tmp_path: Path) -> Path:
    path = tmp_path / "plain.txt"
    path.write_text("not wandb")
    return path


@pytest.mark.slow
def test_online_start_without_a_server_falls_back_to_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials but no reachable server (a closed port on 127.0.0.1): the run must not
    hang; it starts offline and every record lands there."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    logger = WandBLogger(savedir=str(tmp_path), log_freq="batch", settings=QUIET, init_timeout=2)
    started = time.monotonic()
    with logger.start_logging():
        assert logger.backend is not None and logger.backend.mode == "online"  # credentials
        for step in range(5):
            logger.log(float(step), "loss", step=step)
        assert logger.flush(timeout=90)
        assert logger.backend.mode == "offline"
    assert time.monotonic() - started < 90
    assert logger.delivery_errors() == {}
    (run,) = offline_runs(tmp_path)
    assert run.series("loss") == [(s, s) for s in range(5)]


def test_offline_run_opens_no_network_connection(tmp_path: Path) -> None:
    """mode=None without credentials: no DNS lookup, no socket to anything but a local one.

    Checked in a fresh interpreter with a Python audit hook, up to the interpreter's exit, so
    wandb's own process-wide telemetry (which ignores a run's offline mode in wandb 0.31 and
    probes its server when it exports, at the latest at exit) would be caught.
    """
    script = f"""
import atexit, os, sys
attempts = []
atexit.register(lambda: print("ATTEMPTS", attempts))  # runs last: after wandb's own exit hooks
def hook(event, args):
    if event == "socket.getaddrinfo" and args[0] not in ("127.0.0.1", "localhost", "::1"):
        attempts.append(("getaddrinfo", args[0]))
    if event == "socket.connect" and isinstance(args[1], tuple) and args[1][0] not in (
            "127.0.0.1", "::1", "localhost"):
        attempts.append(("connect", args[1]))
sys.addaudithook(hook)
import numpy as np
from fanlog.backends.wandb import WandBLogger
path = os.path.join({str(tmp_path)!r}, "data.txt")
open(path, "w").write("x")
logger = WandBLogger(savedir={str(tmp_path)!r}, log_freq="batch", settings={QUIET!r})
with logger.start_logging():
    logger.save_hyperparameters({{"lr": 0.1}})
    for step in range(5):
        logger.log(float(step), "loss", step=step)
    logger.log(np.zeros((4, 4, 3), np.uint8), "image", kind="image")
    logger.log(path, "data", kind="artifact")
    assert logger.flush(timeout=120)
    print("MODE", logger.backend.mode)
"""
    env = dict(os.environ)
    env.pop("WANDB_ERROR_REPORTING")  # as a user has it: wandb's telemetry switched on
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MODE offline" in done.stdout
    assert "ATTEMPTS []" in done.stdout, done.stdout
