"""JournalLogger: the embedded default. The journal is the store; there is nothing to deliver."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fanlog.backend import AllKinds, Backend
from fanlog.logger import BackendLogger
from fanlog.record import Record, RunInfo, RunStatus


class JournalBackend(Backend):
    """Accepts every kind. Its records are in the journal the moment they are committed."""

    name = "journal"
    supported_kinds = AllKinds()
    needs_delivery = False

    def open(self, run: RunInfo) -> None:
        self.run = run

    def write(self, records: Sequence[Record]) -> None:
        return None

    def close(self, status: RunStatus) -> None:
        return None


class JournalLogger(BackendLogger):
    """Log to the local journal only (``<savedir>/runs/<run>/rank-<r>/journal.sqlite``).

    Read it back with :func:`fanlog.read_run`, the ``fanlog`` CLI, or deliver it to a
    tracker later with ``fanlog sync``.
    """

    backend_class = JournalBackend

    def __init__(
        self,
        savedir: str = "mllogs",
        log_freq: int | str = "epoch",
        log_on_workers: int | list[int] = 0,
        **common: Any,
    ) -> None:
        super().__init__(savedir=savedir, log_freq=log_freq, log_on_workers=log_on_workers, **common)

    def make_backend(self) -> JournalBackend:
        return JournalBackend()
