"""Small in-process backends used by the core tests.

They are real `Backend` implementations (not mocks of a tracker): the core's job is to
route records to backends, and these make what arrived, and failures, observable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from fanlog.backend import Backend
from fanlog.logger import BackendLogger
from fanlog.record import Record, RunInfo, RunStatus


class RecordingBackend(Backend):
    name = "recording"
    supported_kinds = frozenset({"metric", "param", "text", "dict", "image", "histogram", "artifact"})

    def __init__(self, fail_times: int = 0, delay: float = 0.0, always_fail: bool = False) -> None:
        super().__init__()
        self.records: list[Record] = []
        self.status: RunStatus | None = None
        self.opened: RunInfo | None = None
        self.fail_times = fail_times
        self.always_fail = always_fail
        self.delay = delay
        self.calls = 0
        self.lock = threading.Lock()

    def open(self, run: RunInfo) -> None:
        self.opened = run

    def write(self, records: Sequence[Record]) -> None:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.always_fail or self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionError("tracker unreachable (test backend)")
        with self.lock:
            self.records.extend(records)

    def close(self, status: RunStatus) -> None:
        self.status = status


class RecordingLogger(BackendLogger):
    backend_class = RecordingBackend

    def __init__(
        self,
        savedir: str = "mllogs",
        log_freq: Any = "batch",
        log_on_workers: Any = 0,
        backend: RecordingBackend | None = None,
        **common: Any,
    ) -> None:
        super().__init__(savedir=savedir, log_freq=log_freq, log_on_workers=log_on_workers, **common)
        self.instance = backend or RecordingBackend()

    def make_backend(self) -> RecordingBackend:
        return self.instance


class NullBackend(Backend):
    """Accepts and forgets: the do-nothing backend of the benchmark."""

    name = "null"
    supported_kinds = frozenset({"metric"})

    def open(self, run: RunInfo) -> None:
        pass

    def write(self, records: Sequence[Record]) -> None:
        pass

    def close(self, status: RunStatus) -> None:
        pass


class NullLogger(BackendLogger):
    backend_class = NullBackend

    def make_backend(self) -> NullBackend:
        return NullBackend()
