"""Forked children: DataLoader workers, multiprocessing with fork, Pool, os.fork.

A child inherits the parent's loggers, but none of their threads, and it must never
touch the parent's journal connection, locks or exit actions. Hooks registered with
``os.register_at_fork``:

- before the fork, take fanlog's locks (and every journal's), so that none is held in
  the middle of an operation (inside SQLite, say) when the process is copied;
- in the parent, release them;
- in the child, release them, forget the parent's runs (no atexit or SIGTERM action on
  them), and give every live run a :class:`ForkedPipeline`. Nothing is opened yet:
  a worker that never logs costs nothing.

A logger used in the child records to a journal of its own beside the parent's
(``journal.<n>.sqlite`` in the same rank directory), journal only (no tracker is opened
in a child), committed on every call (children often end with ``os._exit``, which skips
every exit action). It keeps the parent's backend slots, so ``fanlog sync`` delivers it
later to the same trackers. log() pays nothing for this: the loggers still refer to the
same :class:`~fanlog.run.Run`, which now writes through the child's pipeline.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from typing import Any

from fanlog import journal as journal_module
from fanlog import lifecycle
from fanlog.journal import Journal, Pending, SetAside, open_writer
from fanlog.journal import lock as writer_lock
from fanlog.journal.capture import Captured, CaptureFailed, capture
from fanlog.pipeline import Pipeline, PipelineSettings
from fanlog.record import RunInfo, RunStatus
from fanlog.run import Run

_inherited: list[Any] = []
"""The parent's pipelines, kept referenced in the child so their SQLite connections are never
closed (nor touched at all) by it."""
_held_at_fork: list[Any] = []


class ForkedPipeline:
    """What a run writes to in a forked child: its own journal, committed on every call."""

    def __init__(self, parent: Pipeline | ForkedPipeline, run: Run) -> None:
        self.info: RunInfo = parent.info
        self.settings: PipelineSettings = parent.settings
        self.pid = os.getpid()
        self.parent_pid = parent.pid
        self.parent_journal = parent.journal.path if parent.journal is not None else None
        self.backend_slots = _slots_of(parent)
        self.journal: Journal | None = None
        self.dropped = self.unstored = 0
        self.closed = threading.Event()
        self.status: RunStatus | None = None
        self._run = run
        self._epoch_seen = run.epoch
        """The parent's epoch last taken; a child that ends epochs itself keeps its own."""
        self._writing = False
        """True while this thread is inside the journal: a SIGTERM handler that interrupts it must
        not touch the journal (its lock is held by the very thread the handler runs on)."""

    # ------------------------------------------------------------ the Pipeline calls log() uses
    def submit(self, record: Pending) -> None:
        if self._run.epoch == self._epoch_seen:  # a persistent worker follows the parent's epoch
            epoch = self._run.epoch = self._epoch_seen = self._run.shared.epoch
            record = (*record[:5], epoch, *record[6:])  # type: ignore[assignment]
        self._writing = True
        try:
            self._write(record)
        finally:
            self._writing = False

    def _write(self, record: Pending) -> None:
        journal = self._open()
        aside: list[SetAside] = []
        rows = journal.encode([record], journal.last_seq + 1, self._failed, aside)
        try:
            journal.insert(rows, aside, on_error=self._failed, on_escaped=self._escaped)
        except Exception as exc:  # noqa: BLE001 - no spill in a child: say it is lost
            self._report(RuntimeError(f"record {record[1]!r} not stored in {journal.path}: {exc!r}"))
            warnings.warn(
                f"fanlog: forked child {self.pid} cannot write {journal.path} ({exc}); "
                f"record {record[1]!r} is lost",
                RuntimeWarning,
                stacklevel=4,
            )
            return

    def capture(self, source: str, identifier: str) -> Captured | CaptureFailed:
        self._writing = True
        try:
            journal = self._open()
            return capture(
                source, identifier, os.path.join(journal.run_dir, journal.files), self.settings.capture
            )
        except OSError as exc:
            return CaptureFailed(source, f"{type(exc).__name__}: {exc.strerror or exc}")
        finally:
            self._writing = False

    def flush(self, timeout: float | None = None) -> bool:
        return True  # every call is committed already

    flush_journal = flush

    def interrupt(self, status: RunStatus | None = None, within: float = 0.0, drain: bool = False) -> None:
        return None

    def close(self, status: RunStatus, timeout: float | None = None) -> bool:
        self.status = status
        if self._writing:  # a signal handler interrupted a write: leave the journal as it is
            self.closed.set()
            return False
        if self.journal is not None:
            try:
                self.journal.set_meta({"status": status.value, "ended": time.time()})
            finally:
                self.journal.close()
        self.closed.set()
        return True

    def problems(self) -> list[str]:
        return []  # nothing is delivered from a child, so nothing is left behind here

    # ------------------------------------------------------------ internals
    def _open(self) -> Journal:
        """This child's journal, opened on first use, with the parent's backend slots."""
        if self.journal is not None:
            return self.journal
        journal = open_writer(self.info.run_dir)
        for name, slot, kinds, options in self.backend_slots:
            journal.register_backend(name, kinds, options, slot=slot)
        journal.set_meta(
            {
                "run_id": self.info.run_id,
                "run_name": self.info.run_name,
                "rank": self.info.rank,
                "world_size": self.info.world_size,
                "experiment_name": self.info.experiment_name,
                "started": time.time(),
                "status": "running",
                "pid": self.pid,
                "host": os.uname().nodename,
                "backends": [],
                "forked_from": {
                    "pid": self.parent_pid,
                    "journal": os.path.basename(self.parent_journal or ""),
                },
            }
        )
        self.journal = journal
        lifecycle.register(self._run)  # closed at this child's exit, not the parent's
        _close_with_multiprocessing(self._run)
        return journal

    def _failed(self, exc: BaseException, key: str) -> None:
        self.unstored += 1
        self._report(
            RuntimeError(
                f"record {key!r} could not be stored: {exc!r}; it is set aside "
                "in the journal's 'unstored' table"
            )
        )

    def _escaped(self, original: str, stored: str) -> None:
        warnings.warn(
            f"fanlog: the identifier {ascii(original)} is not valid Unicode text; it is stored as {stored!r}",
            RuntimeWarning,
            stacklevel=6,
        )

    def _report(self, exc: BaseException) -> None:
        self._run.backend_failed("journal", exc)


def _slots_of(parent: Pipeline | ForkedPipeline) -> list[tuple[str, int, list[str], dict[str, Any]]]:
    """(name, slot, kinds, options) of the parent's backends: the child's journal keeps them."""
    if isinstance(parent, ForkedPipeline):
        return parent.backend_slots
    return [(e.name, e.slot, sorted(e.backend.supported_kinds), e.backend.spec()) for e in parent.slots]


def _close_with_multiprocessing(run: Run) -> None:
    """multiprocessing children end with os._exit after running their finalizers: close there."""
    util = sys.modules.get("multiprocessing.util")
    process = sys.modules.get("multiprocessing.process")
    if util is None or process is None or process.current_process().name == "MainProcess":
        return
    util.Finalize(run, _destroy, args=(run,), exitpriority=10)


def _destroy(run: Run) -> None:
    try:
        run.destroy(RunStatus.FINISHED)
    except Exception:  # noqa: BLE001 - exit path
        pass


# ---------------------------------------------------------------------------- fork hooks
def _before_fork() -> None:
    locks = [lifecycle._lock, writer_lock.registry_lock, journal_module._open_lock]
    for lock in locks:
        lock.acquire()
    journals = journal_module.live_journals()
    for journal in journals:
        journal._lock.acquire()
    _held_at_fork[:] = [*locks, *(j._lock for j in journals)]


def _after_fork_in_parent() -> None:
    _release_held()


def _after_fork_in_child() -> None:
    _release_held()
    writer_lock.forget_after_fork()
    journal_module.forget_after_fork()
    for run in lifecycle.forget_after_fork():
        if not isinstance(run, Run):
            continue
        parent = run.pipeline
        assert isinstance(parent, (Pipeline, ForkedPipeline))
        _inherited.append(parent)
        if isinstance(parent, Pipeline):
            parent.pending.clear()  # the parent's queue: its records are the parent's to write
        run.use_pipeline(ForkedPipeline(parent, run))


def _release_held() -> None:
    for lock in reversed(_held_at_fork):
        lock.release()
    _held_at_fork.clear()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
