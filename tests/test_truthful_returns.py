"""flush() and destroy_logger_context() say the truth: True exactly when every record
reached the journal and every tracker.

- A tracker that was down and is back up is given an attempt at once (its backoff is cut
  short), so flush() waits for it and destroy returns True once it has everything.
- A record set aside in the journal's `unstored` table makes destroy return False.

The tracker here is a real in-process `Backend` subclass whose outage is a real refused
TCP connection (a port nobody listens on) until it is "healed".
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import fanlog
from fanlog.backend import Backend
from fanlog.kinds import Kind, register_kind
from fanlog.logger import BackendLogger
from fanlog.record import Record, RunInfo, RunStatus
from support.journals import query


def refused_connection() -> None:
    """A real ECONNREFUSED: connect to a port that was just closed."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    socket.create_connection(("127.0.0.1", port), timeout=5).close()


class Outage(Backend):
    """Down (connection refused) while `down` is set; stores everything otherwise."""

    name = "outage"
    supported_kinds = frozenset({"metric", "text"})

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.stored: list[int] = []

    def open(self, run: RunInfo) -> None:
        pass

    def write(self, records: Sequence[Record]) -> None:
        if self.down:
            refused_connection()
        self.stored.extend(r.seq for r in records)

    def close(self, status: RunStatus) -> None:
        pass


class OutageLogger(BackendLogger):
    backend_class = Outage

    def __init__(self, **options: Any) -> None:
        super().__init__(log_freq="batch", **options)
        self.instance = Outage()

    def make_backend(self) -> Outage:
        return self.instance


# a backoff that would outlast the test if flush or destroy waited for it
SLOW_RETRY = {"retry_initial": 30.0, "retry_max": 30.0, "down_after": 1.0, "close_timeout": 20}


@pytest.mark.parametrize("when", ["before-flush", "before-destroy", "never"])
def test_a_tracker_back_up_gets_everything_and_the_return_values_say_so(when: str, tmp_path: Path) -> None:
    logger = OutageLogger(savedir=str(tmp_path), **SLOW_RETRY)
    logger.create_logger_context(rank=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i in range(100):
            logger.log(float(i), "loss", step=i)
        assert logger.flush(timeout=10) is False  # down: nothing delivered
        assert logger.instance.stored == []
        if when == "before-flush":
            logger.instance.down = False
            assert logger.flush(timeout=10) is True  # not "down" until its next retry in 30 s
        elif when == "before-destroy":
            logger.instance.down = False
        closed = logger.destroy_logger_context()
    records = fanlog.read_run(logger.journal_path).records
    if when == "never":
        assert closed is False and logger.instance.stored == []
    else:
        assert closed is True  # judged after the last attempt: everything is there
        assert logger.instance.stored == [r.seq for r in records]
    assert len(records) == 100


def _fragile(value: Any) -> Any:
    if value == "bad":
        raise ValueError("cannot encode this one")
    return value


register_kind(Kind("fragile-truth", lambda item, key: item, "json", finalize=_fragile), replace=True)


def set_aside_by_encoding(logger: Any, tmp_path: Path) -> None:
    logger.log("bad", "notes", kind="fragile-truth")


def set_aside_by_capture(logger: Any, tmp_path: Path) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"w")
    logger.log(str(source), "w" * 300, kind="artifact")  # a file name too long to capture


@pytest.mark.parametrize(
    "set_aside", [set_aside_by_encoding, set_aside_by_capture], ids=["encoding", "capture"]
)
def test_a_record_set_aside_makes_destroy_return_false(set_aside: Any, tmp_path: Path) -> None:
    logger = fanlog.JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch", unsupported="ignore")
    logger.create_logger_context(rank=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(50):
            logger.log(float(i), "loss", step=i)
        set_aside(logger, tmp_path)
        for i in range(50, 100):
            logger.log(float(i), "loss", step=i)
        logger.flush(timeout=30)
        assert logger.destroy_logger_context() is False
    path = str(logger.journal_path)
    assert query(path, "SELECT COUNT(*) FROM unstored")[0][0] == 1
    assert query(path, "SELECT COUNT(*) FROM records WHERE key = 'loss'")[0][0] == 100
    assert any("ended with problems" in str(w.message) or "could not" in str(w.message) for w in caught)
