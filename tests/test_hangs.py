"""Trackers that hang instead of failing: flush() and destroy keep their bounds, nothing is lost.

A real TCP server on 127.0.0.1 that accepts connections and never answers, and a real
HTTP hop that answers slowly in front of a real `mlflow server`
(tests/support/hanging_server.py). The MLflow scenarios run in a subprocess with a
generous hard timeout: the test asserts what happened (flush and destroy returned, the
hung tracker was reported, the journal holds every record, a later `fanlog sync`
delivers all of them), never how long it took.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import fanlog
from fanlog.backend import Backend
from fanlog.logger import BackendLogger
from fanlog.record import Record, RunInfo, RunStatus
from support.hanging_server import HangingServer, TrackerProxy

CHILD = textwrap.dedent(
    """
    import json, sys
    from fanlog.backends.mlflow import MLflowLogger
    logger = MLflowLogger(savedir=sys.argv[1], tracking_uri=sys.argv[2], experiment_name=sys.argv[3],
                          log_freq="batch", **json.loads(sys.argv[4]))
    logger.create_logger_context(rank=0)
    for step in range(500):
        logger.log(float(step), "loss", step=step)
    logger.save_hyperparameters({"lr": 0.01, "layers": 3})
    logger.log("notes", "notes.txt", kind="text")
    print("flush", logger.flush(), flush=True)  # no timeout: it must return by itself
    print("destroy", logger.destroy_logger_context(), flush=True)
    print("journal", logger.journal_path, flush=True)
    """
)


def run_child(tmp_path: Path, url: str, experiment: str, **options: Any) -> tuple[dict[str, str], str]:
    import json

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_HTTP_REQUEST_TIMEOUT"}  # fanlog's own
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "sd"), url, experiment, json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    said = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    return said, done.stderr


def mlflow_run(url: str, experiment: str) -> tuple[Any, Any]:
    import mlflow

    client = mlflow.MlflowClient(url)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    assert len(runs) == 1, runs
    return client, runs[0]


def assert_all_there(client: Any, run: Any) -> None:
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
    assert steps == list(range(500))  # every step, once
    assert run.data.params == {"lr": "0.01", "layers": "3"}
    assert "notes.txt" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow
def test_server_that_never_answers_then_sync_delivers_everything(tmp_path: Path, mlflow_server: Any) -> None:
    hanging = HangingServer()
    try:
        said, stderr = run_child(tmp_path, hanging.url, "hung")  # the default settings
    finally:
        hanging.close()
    assert said["flush"] == "False" and said["destroy"] == "False"
    assert "mlflow: its tracker has not answered a call" in stderr
    assert f"fanlog sync {said['journal']} --to mlflow" in stderr
    assert len(fanlog.read_run(said["journal"]).records) == 503  # everything is in the journal

    report = fanlog.sync(said["journal"], to="mlflow", tracking_uri=mlflow_server.url, progress=False)
    assert report.ok and report.sent == 503, report.summary()
    client, run = mlflow_run(mlflow_server.url, "hung")
    assert_all_there(client, run)
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_server_that_answers_slowly_is_waited_for_while_it_answers(
    tmp_path: Path, mlflow_server: Any
) -> None:
    """Each answer takes 2 s, within down_after (5 s): slow, but healthy; all delivered live."""
    proxy = TrackerProxy(mlflow_server.url, delay=2.0)
    try:
        said, _ = run_child(tmp_path, proxy.url, "slow")
    finally:
        proxy.close()
    assert said["flush"] == "True" and said["destroy"] == "True"
    client, run = mlflow_run(mlflow_server.url, "slow")
    assert_all_there(client, run)
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_server_slower_than_down_after_counts_as_down_and_sync_completes(
    tmp_path: Path, mlflow_server: Any
) -> None:
    """Each answer takes longer than down_after: flush and destroy stop waiting, say so, and
    `fanlog sync` completes the run later; nothing is stored twice."""
    proxy = TrackerProxy(mlflow_server.url, delay=4.0)
    try:
        said, stderr = run_child(tmp_path, proxy.url, "slower", down_after=1.0)
        assert said["flush"] == "False" and said["destroy"] == "False"
        assert "its tracker has not answered a call" in stderr
        proxy.wait_idle()  # what the child abandoned still reaches the server
        report = fanlog.sync(said["journal"], to="mlflow", tracking_uri=mlflow_server.url, progress=False)
    finally:
        proxy.close()
    assert report.ok, report.summary()
    client, run = mlflow_run(mlflow_server.url, "slower")
    assert_all_there(client, run)
    assert run.info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize("every", [0.2, 1.0])
def test_server_that_drips_its_answer_counts_as_down_and_flush_returns(
    tmp_path: Path, mlflow_server: Any, every: float
) -> None:
    """log-batch answers 200 with a body that comes one byte every `every` seconds: the call
    reads now and then, but hardly works, so it stalls. flush() without a timeout and destroy
    return False by themselves; `fanlog sync` completes the run later."""
    proxy = TrackerProxy(mlflow_server.url)
    proxy.drip = ("log-batch", every)
    experiment = f"drip-{every}"
    try:
        said, stderr = run_child(tmp_path, proxy.url, experiment)
        assert said["flush"] == "False" and said["destroy"] == "False"
        assert "its tracker has not answered a call" in stderr
        report = fanlog.sync(said["journal"], to="mlflow", tracking_uri=mlflow_server.url, progress=False)
    finally:
        proxy.close()
    assert report.ok, report.summary()
    client, run = mlflow_run(mlflow_server.url, experiment)
    assert_all_there(client, run)
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_sync_to_a_server_that_never_answers_fails_and_keeps_the_cursor(tmp_path: Path) -> None:
    """`fanlog sync` has no flush() to return from: the request timeout (the user's value
    here, fanlog sets 30 s otherwise) makes it end with an error, the cursor unchanged."""
    logger = fanlog.JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch")
    logger.create_logger_context(rank=0)
    for step in range(10):
        logger.log(float(step), "loss", step=step)
    journal = logger.journal_path
    logger.destroy_logger_context()
    hanging = HangingServer()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "fanlog.cli",
                "sync",
                journal,
                "--to",
                "mlflow",
                "--tracking-uri",
                hanging.url,
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "MLFLOW_HTTP_REQUEST_TIMEOUT": "1"},
        )
    finally:
        hanging.close()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED: cannot open the mlflow run" in done.stdout
    report = fanlog.sync(journal, to="mlflow", dry_run=True, progress=False)
    assert report.journals[0].start == 0 and report.pending == 10  # still all to send


@pytest.mark.slow
def test_fanlog_sets_the_mlflow_request_timeout_unless_the_user_did(tmp_path: Path) -> None:
    code = (
        "from fanlog.backends.mlflow import MLflowBackend\nimport os\nMLflowBackend().prepare()\n"
        "print(os.environ['MLFLOW_HTTP_REQUEST_TIMEOUT'], os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES'])"
    )
    outputs = []
    for value in (None, "7"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
        if value is not None:
            env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = value
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.split())
    assert outputs == [["30", "0"], ["7", "0"]]


# ------------------------------------------------------------------ calls without a timeout of their own
class BlockingBackend(Backend):
    """A tracker library call with no timeout: blocks on a socket that never answers, or
    works hard (CPU) for `busy` seconds per write."""

    name = "blocking"
    supported_kinds = frozenset({"metric"})

    def __init__(self, address: tuple[str, int] | None = None, busy: float = 0.0) -> None:
        super().__init__()
        self.address = address
        self.busy = busy
        self.stored: list[int] = []

    def open(self, run: RunInfo) -> None:
        pass

    def write(self, records: Sequence[Record]) -> None:
        if self.address is not None:
            with socket.create_connection(self.address) as connection:
                connection.sendall(b"records")
                connection.recv(1)  # no timeout: waits forever
        until = time.thread_time() + self.busy
        while time.thread_time() < until:
            pass
        self.stored.extend(r.seq for r in records)

    def close(self, status: RunStatus) -> None:
        pass


class BlockingLogger(BackendLogger):
    backend_class = BlockingBackend

    def __init__(self, backend: BlockingBackend, **options: Any) -> None:
        super().__init__(log_freq="batch", **options)
        self.instance = backend

    def make_backend(self) -> BlockingBackend:
        return self.instance


@pytest.mark.slow
def test_a_call_that_never_returns_counts_as_down(tmp_path: Path) -> None:
    hanging = HangingServer()
    host, port = hanging.url.removeprefix("http://").split(":")
    logger = BlockingLogger(
        BlockingBackend(address=(host, int(port))), savedir=str(tmp_path), down_after=0.5, close_timeout=60
    )
    try:
        logger.create_logger_context(rank=0)
        for step in range(100):
            logger.log(float(step), "loss", step=step)
        assert logger.flush() is False  # returns, although the call never does
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert logger.destroy_logger_context() is False  # well before close_timeout
    finally:
        hanging.close()
    summary = [str(w.message) for w in caught if "ended with problems" in str(w.message)]
    assert summary and "blocking: its tracker has not answered a call" in summary[0]
    assert "records 1..100 not delivered" in summary[0]
    assert logger.instance.stored == []
    assert len(fanlog.read_run(tmp_path).metrics) == 100


def test_a_call_that_works_hard_is_not_mistaken_for_a_hang(tmp_path: Path) -> None:
    """A write busy on the CPU for 4 s (a model being serialised) with down_after=2 s:
    flush() waits for it, since the tracker is working, not hanging."""
    logger = BlockingLogger(BlockingBackend(busy=4.0), savedir=str(tmp_path), down_after=2.0)
    logger.create_logger_context(rank=0)
    logger.log(1.0, "loss", step=0)
    assert logger.flush() is True
    assert logger.destroy_logger_context() is True
    assert logger.instance.stored == [1]
