"""A tracker that refuses *every* record (a proxy or WAF answering 400, an old server) is
not working: nothing is marked refused, flush() and destroy say so, and once it heals
everything is delivered, once. Records refused one by one are still refused for good.

The core tests use a real in-process `Backend` subclass that refuses the way such a
tracker does (the error it raises is what `mlflow` raises for a 4xx); the MLflow tests put
a real HTTP hop (tests/support/hanging_server.py) in front of a real `mlflow server`.
"""

from __future__ import annotations

import random
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import fanlog
from fanlog.backend import Backend
from fanlog.logger import BackendLogger
from fanlog.record import Record, RunInfo, RunStatus
from support.hanging_server import TrackerProxy
from support.journals import query


class BlanketRefusal(Backend):
    """Refuses every call while `refusing` is set, with a permanent error whose text `style`
    chooses; stores everything otherwise. Keys starting with "bad" are always refused, each
    with its own reason (a record the tracker can never store)."""

    name = "blanket"
    supported_kinds = frozenset({"metric"})

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.refusing = True
        self.stored: list[int] = []
        self.calls = 0

    def open(self, run: RunInfo) -> None:
        pass

    def write(self, records: Sequence[Record]) -> None:
        self.calls += 1
        if self.refusing:
            raise ValueError(self._answer())
        bad = [r.key for r in records if r.key.startswith("bad")]
        if bad:
            raise ValueError(f"invalid value for key {bad[0]!r}")
        self.stored.extend(r.seq for r in records)

    def _answer(self) -> str:
        if self.style == "html":
            return "400 Bad Request: <html><body><h1>Request blocked</h1></body></html>"
        if self.style == "request-id":  # the same answer, with a number that changes
            return f"400 Bad Request (request id {random.randrange(10**9)}, {self.calls} calls)"
        return "INVALID_PARAMETER_VALUE: unsupported endpoint"

    def close(self, status: RunStatus) -> None:
        pass


class BlanketLogger(BackendLogger):
    backend_class = BlanketRefusal

    def __init__(self, style: str, **options: Any) -> None:
        super().__init__(log_freq="batch", **options)
        self.instance = BlanketRefusal(style)

    def make_backend(self) -> BlanketRefusal:
        return self.instance


def rejected(journal: str) -> list[tuple[Any, ...]]:
    return query(journal, "SELECT seq FROM rejected")


FAST = {"retry_initial": 0.01, "retry_max": 0.05, "down_after": 1.0}


@pytest.mark.parametrize("style", ["html", "request-id", "old-server"])
@pytest.mark.parametrize("batch", [200, 1], ids=["burst", "one-at-a-time"])
def test_a_tracker_refusing_everything_is_down_not_a_refusal_of_each_record(
    style: str, batch: int, tmp_path: Path
) -> None:
    logger = BlanketLogger(style, savedir=str(tmp_path), **FAST)
    logger.create_logger_context(rank=0)
    step = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the tracker's failure, once
        for _ in range(6 if batch == 1 else 1):  # a slow loop: one record per delivery pass
            for _ in range(batch):
                logger.log(float(step), "loss", step=step)
                step += 1
            assert logger.flush(timeout=3) is False  # nothing delivered: never True
        assert rejected(logger.journal_path) == []  # nothing marked refused
        assert logger.instance.stored == []
        errors = logger.delivery_errors()["blanket"]
        assert any("refuses every record" in e for e in errors), errors
        logger.instance.refusing = False  # the proxy is fixed
        assert logger.flush(timeout=60) is True
        assert logger.destroy_logger_context() is True
    records = fanlog.read_run(logger.journal_path).records
    assert len(records) == step
    assert logger.instance.stored == [r.seq for r in records]  # every record, once, in order
    assert rejected(logger.journal_path) == []


@pytest.mark.parametrize("first", [1, 3, 5])
def test_records_refused_each_for_its_own_reason_are_still_refused_for_good(
    first: int, tmp_path: Path
) -> None:
    """Bad records at the start of a pass, before anything was stored, and one later."""
    logger = BlanketLogger("html", savedir=str(tmp_path), **FAST)
    logger.instance.refusing = False
    logger.create_logger_context(rank=0)
    for i in range(first):
        logger.log(1.0, f"bad-{'abcde'[i]}", step=0)
    for i in range(50):
        logger.log(float(i), "loss", step=i)
    logger.log(1.0, "bad-late", step=0)
    logger.log(1.0, "last", step=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert logger.flush(timeout=60) is True
        assert logger.destroy_logger_context() is False  # records were refused
    records = fanlog.read_run(logger.journal_path).records
    bad = [r.seq for r in records if r.key.startswith("bad")]
    assert sorted(s for (s,) in rejected(logger.journal_path)) == bad
    assert logger.instance.stored == [r.seq for r in records if not r.key.startswith("bad")]


def test_records_refused_for_one_same_reason_are_refused_once_a_later_record_is_stored(
    tmp_path: Path,
) -> None:
    """Four records refused alike at the start of a pass look like a tracker that refuses
    all, until the record after them is stored: then they are refused for good."""

    class SameReason(BlanketRefusal):
        def write(self, records: Sequence[Record]) -> None:
            self.calls += 1
            if any(r.key.startswith("bad") for r in records):
                raise ValueError("height and width must be > 0")
            self.stored.extend(r.seq for r in records)

    logger = BlanketLogger("html", savedir=str(tmp_path), **FAST)
    logger.instance = SameReason("html")
    logger.create_logger_context(rank=0)
    for i in range(4):
        logger.log(1.0, f"bad-{i}", step=0)
    logger.log(1.0, "good", step=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert logger.flush(timeout=60) is True
        assert logger.destroy_logger_context() is False
    records = fanlog.read_run(logger.journal_path).records
    assert len(rejected(logger.journal_path)) == 4
    assert logger.instance.stored == [r.seq for r in records if r.key == "good"]


PROXY_ANSWERS = {
    "html-400": (400, "text/html", b"<html><body><h1>400 Bad Request</h1>blocked by policy</body></html>"),
    "json-400-with-id": (
        400,
        "application/json",
        b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "rejected, request {n}"}',
    ),
    "text-422": (422, "text/plain", b"Unprocessable Entity"),
}


@pytest.mark.slow
@pytest.mark.parametrize("answer", sorted(PROXY_ANSWERS))
def test_mlflow_behind_a_proxy_that_refuses_every_log_batch(
    answer: str, mlflow_server: Any, tmp_path: Path
) -> None:
    import mlflow

    client = mlflow.MlflowClient(mlflow_server.url)
    proxy = TrackerProxy(mlflow_server.url)
    proxy.refuse_every = ("log-batch", *PROXY_ANSWERS[answer])
    experiment = f"blanket-{answer}-{uuid.uuid4().hex[:6]}"
    try:
        logger = fanlog.MLflowLogger(
            savedir=str(tmp_path / "sd"),
            tracking_uri=proxy.url,
            experiment_name=experiment,
            log_freq="batch",
            retry_initial=0.05,
            retry_max=0.5,
        )
        logger.create_logger_context(rank=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for i in range(200):
                logger.log(float(i), "loss", step=i)
            logger.log(0.1, "lr", kind="param")
            assert logger.flush(timeout=8) is False
            assert len(proxy.refused) >= 3  # it was tried
            assert rejected(logger.journal_path) == []
            run_id = logger.mlflow_run_id
            assert client.get_metric_history(run_id, "loss") == []
            proxy.refuse_every = None  # healed
            assert logger.flush(timeout=60) is True
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                closed = logger.destroy_logger_context()
            assert closed is True, [str(w.message) for w in caught]
        steps = sorted(m.step for m in client.get_metric_history(run_id, "loss"))
        assert steps == list(range(200))  # every record, once
        run = client.get_run(run_id)
        assert run.data.params == {"lr": "0.1"} and run.info.status == "FINISHED"
        assert rejected(logger.journal_path) == []
    finally:
        proxy.close()
