"""One started run: what ``create_logger_context()`` builds and ``destroy_logger_context()`` ends.

A logger, and every member of a collection, refers to one :class:`Run`. The run holds all
that lives as long as it does: its :class:`~fanlog.record.RunInfo`, the pipeline it writes
through, the automatic step counters and given steps, the epoch, the ``on_epoch=``
accumulators and ``reduce=`` call counts, the backends' errors, the mask bit of each member,
and its status. Exit handling (:mod:`fanlog.lifecycle`) and the fork hooks
(:mod:`fanlog.forking`) act on runs, never on loggers.

Background threads never warn: they hand their message to :meth:`Run.notify`, and the
caller's thread warns at its next ``log()``, ``flush()`` or destroy (see
:mod:`fanlog.diagnostics`).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import itertools
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, Protocol

from fanlog import aggregation, lifecycle
from fanlog.aggregation import Accumulator
from fanlog.backend import Backend
from fanlog.errors import BackendError, RecordRejected
from fanlog.journal import Journal, Pending, open_writer
from fanlog.journal.capture import Captured, CaptureFailed
from fanlog.pipeline import Pipeline, PipelineSettings
from fanlog.record import RunInfo, RunStatus
from fanlog.secrets import scrub_text
from fanlog.shared import DrawnSteps, SharedState

log = logging.getLogger(__name__)

AGENT_START_SECONDS = 60.0
"""Longest strict mode waits at create_logger_context for the delivery agent to start."""
LogCall = Callable[..., None]
"""``Logger.log``: how the run logs what ``on_epoch=True`` accumulated."""


class Sink(Protocol):
    """What a run writes through: a :class:`~fanlog.pipeline.Pipeline`, or in a forked child
    a :class:`~fanlog.forking.ForkedPipeline`."""

    pid: int
    dropped: int
    unstored: int
    closed: threading.Event

    def submit(self, record: Pending) -> None: ...
    def capture(self, source: str, identifier: str) -> Captured | CaptureFailed: ...

    status: RunStatus | None

    def flush(self, timeout: float | None = None) -> bool: ...
    def flush_journal(self, timeout: float | None = None) -> bool: ...
    def interrupt(
        self, status: RunStatus | None = None, within: float = 0.0, drain: bool = False
    ) -> None: ...
    def close(self, status: RunStatus, timeout: float | None = None) -> bool: ...
    def problems(self) -> list[str]: ...


class Run:
    """The state of one started run, shared by a logger and its members.

    Build it with :meth:`open`. ``attention`` is the one flag ``log()`` checks after the
    gate: it is set while a warning waits for the caller's thread, a strict-mode error waits
    to be raised, or the run is closed.
    """

    def __init__(
        self,
        info: RunInfo,
        journal: Journal,
        members: Sequence[tuple[object, str, Backend]],
        settings: PipelineSettings,
        *,
        strict: bool,
        log: LogCall,
    ) -> None:
        self.info = info
        self.journal_path = journal.path
        self.settings = settings
        self.strict = strict
        self._log = log
        self.steps: dict[str, int] = journal.next_steps() if info.resumed else {}
        """Per key, one past the last step given to log() (or found in a resumed journal)."""
        self.counters: dict[str, Iterator[int]] = {}
        """Per key, the automatic steps (an itertools.count started at `steps`); a given step
        drops the key's counter, so counting resumes after it."""
        self._counter_lock = threading.Lock()
        self.epoch = 0
        self.shared = SharedState(os.path.join(info.run_dir, ".fanlog-steps.lock"))
        """The epoch and step draws this run shares with the children it forks."""
        self.accumulators: dict[str, Accumulator] = {}
        """``on_epoch=True`` values of the open epoch, per key (see :mod:`fanlog.aggregation`)."""
        self.reduce_calls: dict[str, int] = {}
        """``reduce=`` exchanges made so far per key: part of the cross-rank mismatch check."""
        self.errors: dict[str, list[str]] = {}
        """Per backend (and ``"journal"``), the last 50 errors, as ``repr``."""
        self.strict_error: BaseException | None = None
        self.warned: set[Hashable] = set()
        """What this run warned about once already: (logger class, kind) pairs."""
        self.status: RunStatus | None = None
        """None while the run is live; then the status it was closed with."""
        self.attention = False
        self._notices: collections.deque[str] = collections.deque()
        self._gate_caches: list[dict[str, Any]] = []
        backends = [(name, backend) for _, name, backend in members]
        pipeline = Pipeline(info, journal, backends, settings, self.backend_failed, notify=self.notify)
        self.bits: dict[object, int] = {
            member: slot.bit for (member, _, _), slot in zip(members, pipeline.slots, strict=True)
        }
        """The mask bit of each member logger that has a tracker on this rank."""
        self.pipeline: Sink = pipeline

    @classmethod
    def open(
        cls,
        info: RunInfo,
        members: Sequence[tuple[object, str, Backend]],
        settings: PipelineSettings,
        *,
        strict: bool,
        log: LogCall,
    ) -> Run:
        """Open the rank's journal writer, start the pipeline on it, and write the run's meta.

        `members` are (member logger, backend name, backend) for the members that log on this
        rank; `log` is the owner's ``log``, which ends the last epoch at destroy.
        """
        journal = open_writer(info.run_dir)  # the first journal of the rank dir no live writer holds
        info = dataclasses.replace(info, resumed=journal.existed)
        try:
            run = cls(info, journal, members, settings, strict=strict, log=log)
        except BaseException:
            journal.close()
            raise
        pipeline = run.pipeline
        assert isinstance(pipeline, Pipeline)  # a new run's own, not a forked child's
        try:  # an interruption (Ctrl-C, a signal handler that raises) leaves nothing running
            run._start(pipeline, journal, [name for _, name, _ in members])
        except BaseException:
            pipeline.abort()
            raise
        if pipeline.agent is not None and strict:
            run._check_agent(pipeline)
        return run

    def _start(self, pipeline: Pipeline, journal: Journal, backends: list[str]) -> None:
        """Write the run's meta, then start the threads."""
        info = self.info
        journal.set_meta(  # before the delivery agent starts: it reads the status
            {
                "run_id": info.run_id,
                "run_name": info.run_name,
                "rank": info.rank,
                "world_size": info.world_size,
                "experiment_name": info.experiment_name,
                "started": time.time(),
                "status": "running",
                "pid": os.getpid(),
                "host": os.uname().nodename,
                "backends": backends,
                "journal_mode": "exclusive" if journal.exclusive else "wal",
                "delivery": pipeline.delivery,
            }
        )
        pipeline.start()
        if pipeline.agent is not None:
            journal.set_meta({"delivery": pipeline.delivery, "agent_pid": pipeline.agent.pid})

    def _check_agent(self, pipeline: Pipeline) -> None:
        """Strict mode: wait for the delivery agent to build the trackers, and fail the start
        (closing the run as failed) if it could not."""
        problems = pipeline.agent_problems(AGENT_START_SECONDS)
        if problems:
            self.destroy(RunStatus.FAILED, timeout=AGENT_START_SECONDS)
            raise BackendError("fanlog: " + "; ".join(problems) + " (strict mode)")

    # ------------------------------------------------------------------ steps and epochs
    def counter(self, identifier: str) -> Iterator[int]:
        """The automatic step counter of `identifier`, made once even if threads race for it."""
        with self._counter_lock:
            found = self.counters.get(identifier)
            if found is None:
                found = self.counters[identifier] = itertools.count(self.steps.get(identifier, 0))
            return found

    def end_epoch(self, log: LogCall) -> None:
        """Log (through `log`) what ``on_epoch=True`` accumulated, then start the next epoch."""
        if self.accumulators:
            aggregation.end_epoch(self, log)
        self.epoch += 1
        self.shared.set_epoch(self.epoch)  # persistent DataLoader workers read it

    def capture(self, source: str, identifier: str) -> Captured | CaptureFailed:
        """Take an artifact into the run now (see :meth:`fanlog.pipeline.Pipeline.capture`)."""
        return self.pipeline.capture(source, identifier)

    # ------------------------------------------------------------------ members
    def forget_on_close(self, gates: dict[str, Any]) -> None:
        """Empty a logger's gate cache when the run closes, so that its next ``log()`` takes
        the slow path and says that the run has ended."""
        self._gate_caches.append(gates)

    def use_pipeline(self, pipeline: Sink) -> None:
        """Go on writing through another pipeline (a forked child's). The step counters' lock
        may have been held at the fork, and the parent's warnings are the parent's."""
        self.pipeline = pipeline
        self._counter_lock = threading.Lock()
        self._notices.clear()
        if not isinstance(self.counters, DrawnSteps):  # every forked child draws its steps
            bases = {key: next(copy.copy(count)) for key, count in self.counters.items()}
            self.counters = DrawnSteps(self.shared, bases, self.steps)

    @property
    def owner_pid(self) -> int:
        """The process this run belongs to: only that one closes it."""
        return self.pipeline.pid

    # ------------------------------------------------------------------ errors and warnings
    def backend_failed(self, name: str, exc: BaseException) -> None:
        """The pipeline's error callback, on a background thread: record the error, tell the
        user once per backend, and keep going."""
        errors = self.errors.setdefault(name, [])
        errors.append(scrub_text(repr(exc)))  # a tracker's error may quote credentials
        del errors[:-50]
        if len(errors) == 1 and name != "journal":  # the pipeline words its journal's errors
            then = (
                "the records after it are still delivered"
                if isinstance(exc, RecordRejected)
                else "its records stay in the journal and are retried"
            )
            self.notify(f"fanlog: backend {name!r} failed: {errors[-1]}; {then} (summary at destroy)")
        if self.strict:
            self.strict_error = exc
            self.attention = True

    def notify(self, message: str) -> None:
        """Queue a warning for the caller's thread; called from background threads. Once the
        run is closed nobody calls again, so it is logged instead."""
        message = scrub_text(message)
        if self.status is not None:
            log.warning("%s", message)
            return
        self._notices.append(message)
        self.attention = True

    def attend(self, stacklevel: int) -> None:
        """On the caller's thread: warn what background threads queued, and in strict mode
        raise the backend error that waits. `stacklevel` is that of the user's call."""
        self.attention = self.status is not None
        self._warn_notices(stacklevel + 1)
        error = self.take_strict_error()
        if error is not None:
            raise BackendError(f"a backend failed (strict mode): {error!r}") from error

    def take_strict_error(self) -> BaseException | None:
        error, self.strict_error = self.strict_error, None
        return error

    def _warn_notices(self, stacklevel: int) -> None:
        while self._notices:
            warnings.warn(self._notices.popleft(), RuntimeWarning, stacklevel=stacklevel + 1)

    # ------------------------------------------------------------------ flush and close
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far is in the journal and in every healthy backend.
        In strict mode, records left undelivered become the error the next call raises."""
        done = self.pipeline.flush(timeout)
        if self.strict and not done and self.errors and self.strict_error is None:
            last = next(reversed(self.errors.values()))[-1]
            self.strict_error = BackendError(f"records not delivered; last error: {last}")
            self.attention = True
        return done

    def destroy(self, status: RunStatus | str = RunStatus.FINISHED, timeout: float | None = None) -> bool:
        """End the run: log what ``on_epoch=True`` still holds (when finished), drain the
        journal, wait for the trackers, close them with `status`, and warn what went wrong.

        `timeout` is a grace period that bounds the close below ``close_timeout`` (the SIGTERM
        handler passes its own); nothing else changes the settings. Returns True if every
        record reached every backend, and True for a run already closed.
        """
        if self.status is not None:
            return True
        status = RunStatus(status)
        timeout = lifecycle.close_limit(timeout)
        # Signals are deferred from here on: a Ctrl-C now is raised after the close, and the
        # run leaves the exit handlers' list only once nothing can stop its close.
        with lifecycle.protected_close(self.pipeline):
            lifecycle.unregister(self)
            try:
                if status is RunStatus.FINISHED and self.accumulators:
                    self._emit_last_epoch()
            finally:  # a strict-mode error raised while logging them is raised after the close
                complete = self._close(status, timeout)
        return complete

    def close_for_exit(self, status: RunStatus, timeout: float | None) -> None:
        """:class:`fanlog.lifecycle.Closable`: close at interpreter exit or on SIGTERM."""
        self.destroy(status, timeout)

    def make_durable(self, timeout: float) -> None:
        """:class:`fanlog.lifecycle.Closable`: commit the writer's backlog (SIGUSR1)."""
        self.pipeline.flush_journal(timeout)

    def _close(self, status: RunStatus, timeout: float | None) -> bool:
        close_timeout = self.settings.close_timeout
        limit = close_timeout if timeout is None else min(timeout, close_timeout)
        pipeline = self.pipeline
        complete = pipeline.close(status, limit)
        self._warn_notices(stacklevel=4)
        self.status = pipeline.status or status
        self.attention = True
        for gates in self._gate_caches:
            gates.clear()
        self._summarise(complete)
        self._tell_members(self.status)
        return complete

    def _tell_members(self, status: RunStatus) -> None:
        """Each member's ``run_closed`` hook, on this (the closing) thread; a failing hook is
        logged, never raised: the run is closed either way."""
        for member in self.bits:
            closed = getattr(member, "run_closed", None)
            if closed is None:
                continue
            try:
                closed(status)
            except Exception:  # noqa: BLE001
                log.warning("fanlog: %s.run_closed() failed", type(member).__name__, exc_info=True)

    def _emit_last_epoch(self) -> None:
        """Log what ``on_epoch=True`` accumulated since the last end_epoch() (a final, open epoch)."""
        try:
            aggregation.end_epoch(self, self._log)
        except aggregation.ReduceError as exc:
            warnings.warn(f"fanlog: last epoch's aggregates not logged: {exc}", RuntimeWarning, stacklevel=4)

    def _summarise(self, complete: bool) -> None:
        """One warning that lists what went wrong in this run, if anything did."""
        problems = self.pipeline.problems()
        if not self.errors and complete and not problems:
            return
        lines = [f"fanlog: run {self.info.run_id} rank {self.info.rank} ended with problems:"]
        for name, errors in self.errors.items():
            lines.append(f"  {name}: {len(errors)} error(s), last: {errors[-1]}")
        lines.extend(problems)
        warnings.warn(scrub_text("\n".join(lines)), RuntimeWarning, stacklevel=5)
