"""Records a tracker refuses for good: isolated, marked in the journal, never blocking the rest.

The core tests use small in-process backends (real `Backend` subclasses that refuse
chosen records the ways trackers do) and real errors raised by real sockets, HTTP
servers and files. The tracker tests use a real `mlflow server` (behind a real HTTP hop,
tests/support/hanging_server.py, where a case needs one), TensorBoard's own reader and
W&B offline files. Every test counts what each tracker stored and what the journal marked.
"""

from __future__ import annotations

import errno
import http.server
import json
import math
import os
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import fanlog
from fanlog.backend import Backend
from fanlog.backends.journal import JournalLogger
from fanlog.cli import cli
from fanlog.errors import PERMANENT, TRANSIENT, PartialDelivery, RecordRejected, classify
from fanlog.logger import BackendLogger
from fanlog.record import Record, RunInfo, RunStatus
from support.hanging_server import HangingServer, TrackerProxy
from support.mlflow_server import free_port
from support.wandb_log import offline_history


def rejected_rows(journal_path: str) -> list[tuple[str, int, str]]:
    with sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT name, seq, reason FROM rejected ORDER BY seq").fetchall()


def seq_of(journal_path: str, key: str) -> int:
    (record,) = [r for r in fanlog.read_run(journal_path).records if r.key == key]
    return record.seq


def flush_until(logger: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if logger.flush(timeout=5):
            return True
    return False


# ------------------------------------------------------------------ classification
class StatusServer:
    """A real HTTP server on 127.0.0.1 that answers GET /<status> with that status."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(int(self.path.strip("/")))
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def error(self, status: int) -> BaseException:
        try:
            urllib.request.urlopen(f"{self.url}/{status}", timeout=10)
        except urllib.error.HTTPError as exc:
            return exc
        raise AssertionError(f"status {status} did not raise")


def raised(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the error is the value under test
        return exc
    raise AssertionError("no error raised")


@pytest.mark.slow
def test_default_classifier_tells_transient_from_permanent(tmp_path: Path) -> None:
    """Real errors from real sockets, HTTP answers and files, classified without a tracker."""
    import requests

    statuses = StatusServer()
    hanging = HangingServer()
    port = free_port()

    def timed_out() -> None:
        with socket.create_connection(("127.0.0.1", int(hanging.url.rsplit(":", 1)[1])), 5) as s:
            s.settimeout(0.2)
            s.recv(1)

    def bad_status(status: int) -> None:
        requests.get(f"{statuses.url}/{status}", timeout=10).raise_for_status()

    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    try:
        transient = {
            "refused": raised(lambda: socket.create_connection(("127.0.0.1", port), 5)),
            "timeout": raised(timed_out),
            "requests-refused": raised(lambda: requests.get(f"http://127.0.0.1:{port}", timeout=5)),
            "disk-full": OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),  # no full disk here
            "permission": PermissionError(errno.EACCES, "denied"),  # tests run as root here
            "unknown": RuntimeError("something else"),
            "partial-refused": PartialDelivery(3, ConnectionRefusedError("gone")),
            **{f"http-{s}": statuses.error(s) for s in (401, 403, 404, 408, 429, 500, 502, 503)},
            "requests-503": raised(lambda: bad_status(503)),
        }
        permanent = {
            "rejected": RecordRejected("no", 3),
            "partial-rejected": PartialDelivery(2, RecordRejected("no")),
            "missing-file": raised(lambda: (tmp_path / "missing").read_bytes()),
            "a-directory": raised(lambda: (tmp_path / "dir").read_bytes()),
            "fifo-no-writer": raised(lambda: os.open(tmp_path / "fifo", os.O_WRONLY | os.O_NONBLOCK)),
            "bad-value": raised(lambda: float("x")),
            "bad-type": raised(lambda: float(None)),  # type: ignore[arg-type]
            "overflow": raised(lambda: math.exp(1000)),
            "unencodable": raised(lambda: "\udcff".encode()),
            **{f"http-{s}": statuses.error(s) for s in (400, 413, 422)},
            "requests-400": raised(lambda: bad_status(400)),
        }
    finally:
        hanging.close()
        statuses.server.shutdown()
    assert {name: classify(exc) for name, exc in transient.items()} == dict.fromkeys(transient, TRANSIENT)
    assert {name: classify(exc) for name, exc in permanent.items()} == dict.fromkeys(permanent, PERMANENT)


# ------------------------------------------------------------------ the core, with in-process backends
class RefusingBackend(Backend):
    """Stores metrics, except those with key "bad", which it refuses the way `style` says:

    - "named": stores what came before, then ``PartialDelivery(i, RecordRejected(.., seq))``;
    - "noted": ``self.reject(record, ...)`` and goes on with the batch;
    - "anonymous": the whole batch fails with a ValueError (atomic, like MLflow's log_batch);
    - "flaky": the whole batch fails with a ConnectionError (a transient-looking error that a
      bad record causes every time);
    - "down": every call fails with a ConnectionError (a tracker that is down).
    """

    name = "refusing"
    supported_kinds = frozenset({"metric"})

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.stored: list[int] = []
        self.calls = 0

    def open(self, run: RunInfo) -> None:
        pass

    def write(self, records: Sequence[Record]) -> None:
        self.calls += 1
        bad = [i for i, r in enumerate(records) if r.key == "bad"]
        if self.style == "down":
            raise ConnectionError("tracker unreachable")
        if bad and self.style == "anonymous":
            raise ValueError("one value in this batch is invalid")
        if bad and self.style == "flaky":
            raise ConnectionError("connection reset by peer")
        for i, record in enumerate(records):
            if record.key != "bad":
                self.stored.append(record.seq)
            elif self.style == "noted":
                self.reject(record, "key 'bad' is refused")
            else:
                raise PartialDelivery(i, RecordRejected("key 'bad' is refused", record.seq))

    def close(self, status: RunStatus) -> None:
        pass


class RefusingLogger(BackendLogger):
    backend_class = RefusingBackend

    def __init__(self, style: str, **options: Any) -> None:
        super().__init__(log_freq="batch", **options)
        self.instance = RefusingBackend(style)

    def make_backend(self) -> RefusingBackend:
        return self.instance


BAD_POSITIONS = (137, 500, 501, 999)  # one alone, two side by side, the last one


@pytest.mark.parametrize("style", ["named", "noted", "anonymous", "flaky"])
def test_refused_records_are_isolated_and_the_rest_delivered_once(style: str, tmp_path: Path) -> None:
    logger = RefusingLogger(style, savedir=str(tmp_path), retry_initial=0.01, retry_max=0.05, isolate_after=3)
    logger.create_logger_context(rank=0)
    for i in range(1000):
        logger.log(float(i), "bad" if i in BAD_POSITIONS else "good", step=i)
    logger.log(1.0, "last", step=0)  # something after the last bad one, to tell it is bad
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert flush_until(logger, 120)
        assert logger.destroy_logger_context() is False  # not every record reached the tracker
    journal = logger.journal_path
    records = fanlog.read_run(journal).records
    bad = [r.seq for r in records if r.key == "bad"]
    assert [r.seq for r in records if r.key != "bad"] == logger.instance.stored  # once, in order
    rows = rejected_rows(journal)
    assert [(name, seq) for name, seq, _ in rows] == [("refusing", seq) for seq in bad]
    expected = {"flaky": "kept failing", "anonymous": "ValueError: one value"}.get(style, "'bad' is refused")
    assert all(expected in reason for _, _, reason in rows), rows
    if style == "anonymous":  # found by bisection: a few calls per bad record, not one per record
        assert logger.instance.calls < 25 * len(bad)
    summary = [str(w.message) for w in caught if "ended with problems" in str(w.message)]
    assert summary and f"{len(bad)} record(s) refused for good" in summary[0]
    assert read_rejected(journal) == [(r.seq, "bad") for r in records if r.key == "bad"]


def read_rejected(journal: str) -> list[tuple[int, str]]:
    return [(r.seq, r.key) for r in fanlog.read_run(journal).rejected]


def test_a_tracker_that_is_down_gets_nothing_rejected(tmp_path: Path) -> None:
    """Failing on every record is an outage, not a bad record: nothing is marked, all waits."""
    logger = RefusingLogger(
        "down",
        savedir=str(tmp_path),
        retry_initial=0.01,
        retry_max=0.02,
        isolate_after=2,
        close_timeout=1.0,
        down_after=60,
    )
    logger.create_logger_context(rank=0)
    for i in range(300):
        logger.log(float(i), "good", step=i)
    deadline = time.monotonic() + 60
    while logger.instance.calls < 40 and time.monotonic() < deadline:  # isolation passes ran
        time.sleep(0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert logger.destroy_logger_context() is False
    assert logger.instance.calls >= 40
    assert rejected_rows(logger.journal_path) == []
    assert len(fanlog.read_run(logger.journal_path).metrics) == 300  # all kept for `fanlog sync`


# ------------------------------------------------------------------ MLflow, live
@dataclass
class Case:
    """One way MLflow refuses a record: how it is logged, and what the journal says."""

    id: str
    log_bad: Callable[[Any, dict[str, Any]], str]
    """Logs the bad record (and returns its key)."""
    reason: str
    refuse: tuple[str, ...] = ()
    refuse_status: int = 400
    hold: bool = False
    """Keep the tracker waiting until `prepare` ran (to change a captured file first)."""
    prepare: Callable[[str], None] | None = None
    fix: Callable[[dict[str, Any]], None] | None = None
    """Removes the cause, so that `--retry-rejected` delivers the record."""
    options: dict[str, Any] = field(default_factory=dict)


def captured(journal: str, key: str) -> str:
    """The file the journal hands the trackers for artifact `key` (waits for the commit)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [r.value for r in fanlog.read_run(journal).records if r.key == key]
        if found:
            return str(found[0])
        time.sleep(0.05)
    raise AssertionError(f"{key} never reached the journal")


def log_artifact(logger: Any, context: dict[str, Any]) -> str:
    source = context["tmp"] / "weights.bin"
    source.write_bytes(b"weights")
    logger.log(str(source), "ckpt/weights.bin", kind="artifact")
    return "ckpt/weights.bin"


def to_fifo(journal: str) -> None:
    path = captured(journal, "ckpt/weights.bin")
    os.remove(path)
    os.mkfifo(path)  # a FIFO with no writer: reading it would block the upload forever


def file_back(context: dict[str, Any]) -> None:
    path = captured(context["journal"], "ckpt/weights.bin")
    if os.path.exists(path):
        os.remove(path)
    Path(path).write_bytes(b"weights")


def conflict(logger: Any, context: dict[str, Any]) -> str:
    logger.log(0.1, "lr", kind="param")
    logger.log(0.2, "lr", kind="param")  # MLflow params are immutable
    return "lr"


def set_elsewhere(logger: Any, context: dict[str, Any]) -> str:
    """Another writer (a second process, the UI) set the param first: log_batch answers
    INVALID_PARAMETER_VALUE for the whole request that carries fanlog's value."""
    assert flush_until(logger, 60)
    context["client"].log_param(logger.mlflow_run_id, "owner", "someone-else")
    logger.log("fanlog", "owner", kind="param")
    return "owner"


def poison_metric(logger: Any, context: dict[str, Any]) -> str:
    for step in range(200):  # in the same log_batch request as the refused one
        logger.log(float(step), "mixed", step=step)
        if step == 120:
            logger.log(1.0, "poison-metric", step=0)
    return "poison-metric"


def wide_image(logger: Any, context: dict[str, Any]) -> str:
    logger.log(np.zeros((1, 30000), dtype=np.uint8), "strip", kind="image", step=0)
    return "strip"


def escaping_text(logger: Any, context: dict[str, Any]) -> str:
    logger.log("outside", "../escape.txt", kind="text")
    return "../escape.txt"


def checkpoint_name(logger: Any, context: dict[str, Any]) -> str:
    import torch

    logger.log(torch.nn.Linear(2, 2), "ckpts/epoch=3.ckpt", kind="model")  # delivered, not refused
    return "ckpts/epoch=3.ckpt"


def stop_refusing(context: dict[str, Any]) -> None:
    context["proxy"].refuse = ()


MLFLOW_CASES = [
    Case("fifo-artifact", log_artifact, "not a regular file", hold=True, prepare=to_fifo, fix=file_back),
    Case(
        "missing-artifact",
        log_artifact,
        "cannot read",
        hold=True,
        prepare=lambda journal: os.remove(captured(journal, "ckpt/weights.bin")),
        fix=file_back,
    ),
    Case("param-relogged", conflict, "ParamConflictError"),
    Case("param-set-by-another-writer", set_elsewhere, "ParamConflictError"),
    Case(
        "refused-by-the-server",
        poison_metric,
        "INVALID_PARAMETER_VALUE",
        refuse=("poison-metric",),
        fix=stop_refusing,
    ),
    Case(
        "server-keeps-failing-on-it",
        poison_metric,
        "kept failing",
        refuse=("poison-metric",),
        refuse_status=500,
        fix=stop_refusing,
    ),
    Case("image-too-wide-for-a-thumbnail", wide_image, "height and width must be > 0"),
    Case("artifact-path-leaves-the-run", escaping_text, "leaves the run's artifact directory"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", MLFLOW_CASES, ids=[c.id for c in MLFLOW_CASES])
def test_mlflow_refusal_is_marked_and_the_rest_is_delivered(
    case: Case, mlflow_server: Any, tmp_path: Path
) -> None:
    import mlflow

    client = mlflow.MlflowClient(mlflow_server.url)
    proxy = TrackerProxy(mlflow_server.url, refuse=case.refuse, refuse_status=case.refuse_status)
    experiment = f"refused-{case.id}-{uuid.uuid4().hex[:6]}"
    context: dict[str, Any] = {"tmp": tmp_path, "client": client, "proxy": proxy}
    try:
        if case.hold:
            proxy.hold()
        logger = fanlog.MLflowLogger(
            savedir=str(tmp_path / "sd"),
            tracking_uri=proxy.url,
            experiment_name=experiment,
            log_freq="batch",
            retry_initial=0.05,
            retry_max=0.2,
            **case.options,
        )
        logger.create_logger_context(rank=0)
        journal = context["journal"] = logger.journal_path
        for step in range(50):
            logger.log(float(step), "before", step=step)
        key = case.log_bad(logger, context)
        for step in range(50):
            logger.log(float(step), "after", step=step)
        logger.log("still delivered", "notes.txt", kind="text")
        logger.log(7, "later_param", kind="param")
        if case.prepare is not None:
            case.prepare(journal)
        proxy.release()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert flush_until(logger, 120), logger.delivery_errors()
            run_id = logger.mlflow_run_id
            assert logger.destroy_logger_context() is False
        bad_seq = max(r.seq for r in fanlog.read_run(journal).records if r.key == key)
        ((name, seq, reason),) = rejected_rows(journal)
        assert (name, seq) == ("mlflow", bad_seq)
        assert case.reason in reason, reason
        summary = [str(w.message) for w in caught if "ended with problems" in str(w.message)]
        assert summary and "1 record(s) refused for good" in summary[0] and key in summary[0]

        def check_the_rest() -> None:
            for metric in ("before", "after"):  # every other record, exactly once
                steps = sorted(m.step for m in client.get_metric_history(run_id, metric))
                assert steps == list(range(50)), metric
            if case.log_bad is poison_metric:
                assert sorted(m.step for m in client.get_metric_history(run_id, "mixed")) == list(range(200))
            run = client.get_run(run_id)
            assert run.data.params["later_param"] == "7"
            assert "notes.txt" in {a.path for a in client.list_artifacts(run_id)}
            assert run.info.status == "FINISHED"

        check_the_rest()
        # fanlog sync skips it and says so; --retry-rejected tries again
        skipped = fanlog.sync(journal, to="mlflow", tracking_uri=proxy.url, progress=False)
        assert skipped.ok and skipped.sent == 0, skipped.summary()
        assert "1 record(s) mlflow refused earlier are skipped" in skipped.summary()
        if case.fix is not None:
            case.fix(context)
        again = fanlog.sync(journal, to="mlflow", tracking_uri=proxy.url, progress=False, retry_rejected=True)
        assert again.ok, again.summary()
        if case.fix is not None:
            assert again.journals[0].retried == 1 and rejected_rows(journal) == []
            if case.log_bad is poison_metric:
                assert [m.value for m in client.get_metric_history(run_id, key)] == [1.0]
            else:
                assert "ckpt/weights.bin" in {a.path for a in client.list_artifacts(run_id, "ckpt")}
        else:
            assert again.journals[0].retried == 0
            assert [(n, s) for n, s, _ in rejected_rows(journal)] == [("mlflow", bad_seq)]
            assert "refused for good" in again.summary()
        check_the_rest()  # nothing was sent twice
    finally:
        proxy.close()


@pytest.mark.slow
def test_mlflow_keys_and_names_it_would_refuse_are_made_valid(mlflow_server: Any, tmp_path: Path) -> None:
    """A key cut at 250 characters that ends in '/', a checkpoint name with '=' and '.', an
    artifact path '.', 'dir/' or '/abs': delivered under a valid name, nothing refused."""
    import mlflow
    import torch

    client = mlflow.MlflowClient(mlflow_server.url)
    source = tmp_path / "file.bin"
    source.write_bytes(b"data")
    logger = fanlog.MLflowLogger(
        savedir=str(tmp_path / "sd"),
        tracking_uri=mlflow_server.url,
        experiment_name=f"valid-{uuid.uuid4().hex[:6]}",
        log_freq="batch",
    )
    cut = "a" * 249 + "/bbb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the renaming warnings
        logger.create_logger_context(rank=0)
        logger.log(3.0, cut, step=0)
        logger.log(torch.nn.Linear(2, 2), "ckpts/epoch=3.ckpt", kind="model")
        logger.log(str(source), "dir/", kind="artifact")
        logger.log("text at the root", "/abs.txt", kind="text")
        logger.log("normalised", "a/../b.txt", kind="text")
        assert flush_until(logger, 120)
        run_id = logger.mlflow_run_id
        assert logger.destroy_logger_context() is True
    assert rejected_rows(logger.journal_path) == []
    run = client.get_run(run_id)
    assert run.data.metrics == {"a" * 249: 3.0}
    assert {"dir", "abs.txt", "b.txt"} <= {a.path for a in client.list_artifacts(run_id)}
    (output,) = run.outputs.model_outputs
    assert client.get_logged_model(output.model_id).name == "ckpts-epoch_3-ckpt"
    assert run.info.status == "FINISHED"


# ------------------------------------------------------------------ fanlog sync, ls, show
def journal_only_run(savedir: Path, tmp_path: Path) -> str:
    logger = JournalLogger(
        savedir=str(savedir),
        log_freq="batch",
        job_id="offline",
        experiment_name=f"offline-{uuid.uuid4().hex[:6]}",
    )
    logger.create_logger_context(rank=0)
    for step in range(30):
        logger.log(float(step), "loss", step=step)
    for name in ("a.bin", "b.bin"):
        (tmp_path / name).write_bytes(name.encode())
        logger.log(str(tmp_path / name), f"files/{name}", kind="artifact")
    logger.log("outside", "../escape.txt", kind="text")
    logger.log({"depth": 3}, "config.json", kind="dict")
    path = logger.journal_path
    assert logger.destroy_logger_context()
    return path


@pytest.mark.slow
def test_sync_marks_what_the_tracker_refuses_and_retry_rejected_sends_it_again(
    mlflow_server: Any, tmp_path: Path
) -> None:
    import mlflow

    journal = journal_only_run(tmp_path / "sd", tmp_path)
    fifo = captured(journal, "files/a.bin")
    os.remove(fifo)
    os.mkfifo(fifo)  # the copy in the run became a FIFO
    os.remove(captured(journal, "files/b.bin"))  # ... and this one was deleted
    runner = CliRunner()
    first = runner.invoke(cli, ["sync", journal, "--to", "mlflow", "--tracking-uri", mlflow_server.url])
    assert first.exit_code == 0, first.output
    assert "3 record(s) refused for good by mlflow" in first.output
    rows = rejected_rows(journal)
    assert [(n, s) for n, s, _ in rows] == [
        ("sync:mlflow", seq_of(journal, k)) for k in ("files/a.bin", "files/b.bin", "../escape.txt")
    ]
    client = mlflow.MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name(fanlog.read_run(journal).meta[0]["experiment_name"])
    (run,) = client.search_runs([experiment.experiment_id])
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(30))
    assert "config.json" in {a.path for a in client.list_artifacts(run.info.run_id)}  # after them

    listing = runner.invoke(cli, ["ls", str(tmp_path / "sd")])
    assert "sync:mlflow 31/34 REJECTED 3" in listing.output, listing.output
    shown = runner.invoke(cli, ["show", journal])
    assert "rejected: 3 record(s)" in shown.output
    row = next(line for line in shown.output.splitlines() if "../escape.txt" in line)
    assert row.split()[:4] == [str(seq_of(journal, "../escape.txt")), "text", "../escape.txt", "sync:mlflow"]
    as_json = json.loads(runner.invoke(cli, ["show", journal, "--json"]).output)
    assert [r["key"] for r in as_json["rejected"]] == ["files/a.bin", "files/b.bin", "../escape.txt"]

    second = runner.invoke(cli, ["sync", journal, "--to", "mlflow", "--tracking-uri", mlflow_server.url])
    assert "sent 0 record(s)" in second.output
    assert "3 record(s) mlflow refused earlier are skipped" in second.output

    os.remove(fifo)
    Path(fifo).write_bytes(b"a.bin")  # the causes are removed for two of them
    Path(captured(journal, "files/b.bin")).write_bytes(b"b.bin")
    third = runner.invoke(
        cli, ["sync", journal, "--to", "mlflow", "--tracking-uri", mlflow_server.url, "--retry-rejected"]
    )
    assert third.exit_code == 0, third.output
    assert "2 record(s) refused earlier were delivered now" in third.output
    escaped = seq_of(journal, "../escape.txt")
    assert [(n, s) for n, s, _ in rejected_rows(journal)] == [("sync:mlflow", escaped)]
    files = {a.path for a in client.list_artifacts(run.info.run_id, "files")}
    assert files == {"files/a.bin", "files/b.bin"}
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 30  # nothing twice
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


# ------------------------------------------------------------------ TensorBoard and W&B
ODD_VALUES = (1e308, -0.0, math.nan, math.inf, -math.inf, 5e-324, -1e308)


def log_odd_values(logger: Any) -> None:
    for step, v in enumerate(ODD_VALUES):
        logger.log(v, "odd", step=step)
    logger.log(np.full(10, np.nan), "all_nan", kind="histogram", step=0)  # nothing to draw
    logger.log(np.array([-1e308, 0.0, 1e308]), "huge_range", kind="histogram", step=0)
    logger.log("t" * 10_000_000, "big_text", kind="text", step=0)
    logger.log(np.zeros((1, 1), dtype=np.uint8), "pixel", kind="image", step=0)
    logger.log(np.zeros((1, 30000), dtype=np.uint8), "strip", kind="image", step=0)
    for step in range(20):
        logger.log(float(step), "after", step=step)


@pytest.mark.slow
def test_tensorboard_refuses_an_empty_histogram_and_stores_the_rest(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = fanlog.TensorBoardLogger(
        savedir=str(tmp_path / "sd"), logdir=str(tmp_path / "tb"), log_freq="batch"
    )
    logger.create_logger_context(rank=0)
    log_odd_values(logger)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert flush_until(logger, 60)
        assert logger.destroy_logger_context() is False
    journal = logger.journal_path
    ((name, seq, reason),) = rejected_rows(journal)
    assert (name, seq) == ("tensorboard", seq_of(journal, "all_nan"))
    assert "no finite value" in reason
    every = {"scalars": 0, "images": 0, "histograms": 0, "tensors": 0}
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance=every)
    events.Reload()
    assert [e.step for e in events.Scalars("after")] == list(range(20))
    odd = [e.value for e in events.Scalars("odd")]  # TensorBoard keeps 32-bit floats
    assert odd[0] == math.inf and odd[1] == 0.0 and math.isnan(odd[2]) and odd[3] == math.inf
    assert odd[4] == -math.inf and odd[5] == 0.0 and odd[6] == -math.inf
    (huge,) = events.Histograms("huge_range")
    assert huge.histogram_value.min == -1e308 and huge.histogram_value.max == 1e308
    assert sum(huge.histogram_value.bucket) == 3
    images = events.Images("pixel") + events.Images("strip")
    assert [(i.width, i.height) for i in images] == [(1, 1), (30000, 1)]
    (text,) = events.Tensors("big_text")
    assert len(text.tensor_proto.string_val[0]) == 10_000_000

    report = fanlog.sync(
        journal, to="tensorboard", logdir=str(tmp_path / "tb"), progress=False, retry_rejected=True
    )
    assert report.ok and report.journals[0].retried == 0 and report.sent == 0
    assert [(n, s) for n, s, _ in rejected_rows(journal)] == [("tensorboard", seq)]  # still refused


@pytest.mark.slow
def test_wandb_refuses_an_empty_histogram_and_a_fifo_and_stores_the_rest(
    tmp_path: Path, wandb_offline: None
) -> None:
    options = {"mode": "offline", "settings": {"x_disable_stats": True, "console": "off"}}
    logger = fanlog.WandBLogger(savedir=str(tmp_path / "sd"), log_freq="batch", **options)
    logger.create_logger_context(rank=0)
    log_odd_values(logger)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert flush_until(logger, 120)
        assert logger.destroy_logger_context() is False
    journal = logger.journal_path
    ((name, seq, reason),) = rejected_rows(journal)
    assert (name, seq) == ("wandb", seq_of(journal, "all_nan")) and "no finite value" in reason
    rows = offline_history(tmp_path / "sd")
    assert [r["after"] for r in rows if "after" in r] == [float(s) for s in range(20)]
    odd = [r["odd"] for r in rows if "odd" in r]
    assert odd[0] == 1e308 and odd[1] == 0 and odd[3] == math.inf and odd[5] == 5e-324
    assert math.isnan(odd[2]) and odd[4] == -math.inf and odd[6] == -1e308
    (step0,) = [r for r in rows if "big_text" in r]
    assert len(step0["big_text"]) == 10_000_000
    assert sum(step0["huge_range/values"]) == 3 and "all_nan/values" not in step0
    assert (step0["strip/width"], step0["strip/height"]) == (30000, 1)

    # an artifact whose captured copy became a FIFO, through `fanlog sync --to wandb`
    offline = journal_only_run(tmp_path / "offline", tmp_path)
    fifo = captured(offline, "files/a.bin")
    os.remove(fifo)
    os.mkfifo(fifo)
    report = fanlog.sync(offline, to="wandb", progress=False, **options)
    assert report.ok, report.summary()
    assert [(n, s) for n, s, _ in rejected_rows(offline)] == [("sync:wandb", seq_of(offline, "files/a.bin"))]
    assert report.sent == 33  # 30 metrics, b.bin, the text and the dict
    os.remove(fifo)
    Path(fifo).write_bytes(b"a.bin")
    again = fanlog.sync(offline, to="wandb", progress=False, retry_rejected=True, **options)
    assert again.ok and again.journals[0].retried == 1 and again.sent == 1, again.summary()
    assert rejected_rows(offline) == []
