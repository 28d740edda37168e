"""Moving records off the training loop's thread: queue → journal writer → dispatchers.

The caller appends a tuple to a deque (no lock, no I/O). One writer thread drains
it in batches into the journal and commits; one dispatcher thread per backend
reads what is new for it from the journal, hands it over in batches, records how
far delivery got, and retries with backoff when the tracker fails. A slow or dead
backend therefore never slows the caller nor the other backends: its backlog
waits on disk.

Fault path: when the journal cannot be written (disk full, read-only save dir), the
writer warns once and keeps numbering records into a bounded in-memory *spill* that
the dispatchers deliver from, so trackers keep receiving. It retries the journal
every ``retry_initial`` seconds and moves the spill into it once it is writable again.

Refused records: a record a tracker can never store is isolated (see
:mod:`fanlog.delivery`), marked in the journal's ``rejected`` table with the reason, and
skipped; the records after it keep flowing. A tracker call that stalls (a server that
never answers) counts toward ``down_after`` while it runs, so flush() and destroy keep
their bounds whatever the tracker does.

A record that cannot be stored on its own (a value that fails to encode, a row SQLite
refuses) is not an outage: it is set aside in the journal and reported, and the rest of
its batch is written.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fanlog.backend import Backend
from fanlog.delivery import BatchDelivery, CallWatch
from fanlog.delivery.client import DELIVERY_MODES, AgentProcess, AgentReport, plan
from fanlog.delivery.follow import is_down
from fanlog.errors import RecordRejected, reason_of
from fanlog.journal import Journal, Pending, Row, SetAside, connect
from fanlog.journal.capture import CAPTURE_MODES, Captured, CaptureFailed, capture
from fanlog.journal.rows import MASK, SEQ, safe_repr
from fanlog.journal.store import kind_name
from fanlog.record import Record, RunInfo, RunStatus
from fanlog.secrets import scrub_text

log = logging.getLogger(__name__)

WRITE_BATCH = 2048
"""Records per journal transaction: encoding them holds the GIL for about half a millisecond
(well under the 5 ms switch interval), and SQLite then inserts them in chunks without it."""
WRITER_RETRIES = 5
"""Failures in a row (fanlog bugs, not bad records) after which the writer thread stops."""
MIN_RETRY_GAP = 0.2
"""Shortest time between two attempts of a failing tracker, when flush() cuts its backoff."""


@dataclass
class PipelineSettings:
    """Knobs of the background machinery; the defaults suit a training loop."""

    flush_interval: float = 0.2
    """Longest time a record waits in memory before it is committed (what kill -9 can lose)."""
    max_pending: int = 200_000
    """Records held in memory before the caller is made to wait (the backlog beyond is on disk)."""
    max_block: float = 1.0
    """Longest the caller waits at `max_pending`; then the record is dropped and counted."""
    close_timeout: float = 30.0
    """Longest destroy waits for backends to catch up; the rest stays in the journal for sync."""
    retry_initial: float = 0.5
    retry_max: float = 30.0
    spill_max: int = 100_000
    """Records kept in memory for the trackers while the journal cannot be written;
    beyond it the oldest are dropped from memory (counted, and reported at destroy)."""
    down_after: float = 5.0
    """A backend failing for this long, or stalled this long in one call (its thread blocked,
    using no CPU: a server that never answers), is down: flush() and destroy stop waiting."""
    isolate_after: int = 3
    """Failures of the same batch after which the dispatcher looks for one record in it that
    the tracker keeps failing on (then again after 2x, 4x, ... as many)."""
    capture: str = "auto"
    """How an artifact enters the run at the log() call: ``"auto"`` (a hard link for files of
    16 MiB or more where the file system allows it, a copy otherwise), ``"link"`` (a hard
    link for every file where possible) or ``"copy"`` (always a copy)."""
    delivery: Literal["auto", "agent", "thread"] = "thread"
    """Who delivers to the trackers: ``"thread"`` (the default), dispatcher threads in the
    training process; ``"agent"``, a process of its own that follows the journal (the
    training process only writes it, and never imports a tracker library); ``"auto"``: the
    agent when every tracker can be rebuilt in another process from its declaration and the
    journal is not on a network file system, else threads (see docs/delivery.md)."""
    agent_linger: float = 300.0
    """Longest the delivery agent goes on retrying a tracker without progress once the
    training process has let go of the run (destroy returned, or the process died); then
    what is left waits in the journal for ``fanlog sync``."""

    def __post_init__(self) -> None:
        if self.capture not in CAPTURE_MODES:
            raise ValueError(f"capture must be one of {CAPTURE_MODES}; got {self.capture!r}")
        if self.delivery not in DELIVERY_MODES:
            raise ValueError(f"delivery must be one of {DELIVERY_MODES}; got {self.delivery!r}")


@dataclass
class BackendSlot:
    """A backend attached to a pipeline: its journal name, its mask bit and its state."""

    name: str
    backend: Backend
    slot: int
    delivered: int = 0
    failing_since: float | None = None
    opened: bool = False
    closed: bool = False
    watch: CallWatch = field(init=False)
    """The backend call in progress, if any."""
    stuck: int = 0
    """Failed attempts in a row that did not move the cursor."""
    rejected: list[tuple[int, str, str, str]] = field(default_factory=list)
    """(seq, kind, key, reason) of the records the backend refused for good, in this process."""
    abandoned: bool = False
    """Set when destroy stopped waiting for a call that stalled; the thread stops after it."""
    agent: bool = False
    """Delivered by the delivery agent: `delivered`, `closed` and `health` are read from the
    journal, where the agent writes them."""
    health: dict[str, Any] | None = None
    """The agent's last ``health`` row for this backend (see :mod:`fanlog.delivery.follow`)."""
    agent_gone: bool = False
    """The agent died and was not started again: nothing delivers this backend any more."""
    trusted: bool = False
    """Set while the tracker's last delivery pass stored a record: its refusals are about
    the records (see BatchDelivery)."""
    attempts: int = 0
    """Delivery attempts that ended (flush waits for a fresh one before it calls a failing
    tracker down: it may be back up since its last retry)."""
    attempted_at: float = 0.0
    """When the last attempt ended (time.monotonic)."""
    wake: threading.Event = field(default_factory=threading.Event)
    """Set when there may be work (a commit, close): an idle dispatcher sleeps on it, no timer."""
    hurry: threading.Event = field(default_factory=threading.Event)
    """Set to cut the dispatcher's backoff short (flush, close); commits do not, so a failing
    tracker is not retried faster because records keep arriving."""

    def __post_init__(self) -> None:
        self.watch = CallWatch(self.backend.work_clock)

    @property
    def bit(self) -> int:
        return 1 << self.slot

    def down(self, after: float, tried: int = -1) -> bool:
        """Failing without a success for `after` seconds (and, with `tried`, in an attempt
        that ended after `tried` attempts had), or stalled that long in one call (in the
        agent: as its ``health`` row says), or its agent is gone."""
        if self.agent:
            return self.agent_gone or is_down(self.health, after)
        failing = self.failing_since is not None and time.monotonic() - self.failing_since >= after
        return (failing and self.attempts > tried) or self.watch.stalled_for() >= after


class Pipeline:
    """The background half of a run: owns the journal, the writer and the dispatchers.

    Construction registers the backends in the journal; :meth:`start` starts the threads.
    Background threads report through `on_error` (an error of a backend or of the journal)
    and `notify` (a message for the user, which the caller's thread warns; default: logged).
    """

    def __init__(
        self,
        info: RunInfo,
        journal: Journal,
        backends: list[tuple[str, Backend]],
        settings: PipelineSettings | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
        *,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.info = info
        self.settings = settings or PipelineSettings()
        self.journal = journal
        """This pipeline's journal, opened by `fanlog.journal.open_writer` (it holds the lock)."""
        self.pid = os.getpid()
        self.committed = self.journal.last_seq
        self._on_error = on_error
        self._notify = notify or _log_warning
        self.slots: list[BackendSlot] = []
        for name, backend in backends:
            slot = self.journal.register_backend(name, backend.supported_kinds, backend.spec())
            entry = BackendSlot(name, backend, slot, delivered=self.journal.delivered(name))
            self.slots.append(entry)
        self.pending: collections.deque[Pending] = collections.deque()
        self.dropped = 0
        self.submitted = 0
        self.written = 0
        self.unstored = 0
        """Records set aside because they could not be stored (see the journal's unstored table)."""
        self.accepted = self.committed
        """Highest seq handed to the dispatchers: in the journal, or in the spill."""
        self.spill: collections.deque[Row] = collections.deque()
        self._aside: list[SetAside] = []
        """Records that could not be stored, waiting (with the spill) for the journal."""
        self.spill_dropped = 0
        self.journal_error: BaseException | None = None
        """Why the journal cannot be written right now (None when it can)."""
        self._spill_lock = threading.Lock()  # background threads only; never the caller
        self._next_retry = 0.0
        self._closing = False
        self._close_status = RunStatus.FINISHED
        self._interrupted = False
        self._close_deadline = float("inf")
        self._drain_deadline = float("inf")
        self.closed = threading.Event()
        self._wake: queue.SimpleQueue[bool] = queue.SimpleQueue()
        """Tokens for the sleeping writer: False from log() (work arrived), True to write now.
        A SimpleQueue because its put() is reentrant: a signal handler may wake the writer
        while the thread it interrupted is inside put() (an Event's lock would deadlock)."""
        self._writer_idle = False
        """Set by the writer before it sleeps with nothing to write: the next log() wakes it."""
        self._in_flight: list[Pending] = []
        self._writer_crashes = 0
        self._escaped_keys: set[str] = set()
        self.writer_error: BaseException | None = None
        """Set when the writer thread failed repeatedly and stopped (a fanlog bug)."""
        self.status: RunStatus | None = None
        """The status the run was closed with (None until then)."""
        self._progress = threading.Condition()
        self._stop_dispatch = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="fanlog-writer", daemon=True)
        delivering = [e for e in self.slots if e.backend.needs_delivery]
        for entry in self.slots:
            if entry not in delivering:
                entry.opened = True  # the journal itself is this backend's store
        self._agent_specs, why = plan(
            self.settings.delivery,
            [(e.name, e.slot, e.backend) for e in delivering if e.backend.runs_in_agent],
            self.journal.exclusive,
        )
        for entry in delivering:
            entry.agent = entry.backend.remote = any(s["name"] == entry.name for s in self._agent_specs)
        self._agent_slots = [e for e in delivering if e.agent]
        """Backends the delivery agent delivers (see :mod:`fanlog.delivery.agent`)."""
        self._delivering = [e for e in delivering if not e.agent]
        """Backends delivered by dispatcher threads of this process."""
        self.delivery = "agent" if self._agent_slots else "thread"
        self.agent: AgentProcess | None = None
        self._agent_reader: Journal | None = None
        self._agent_left = False
        """destroy ran out of time while the agent was still delivering: it goes on alone."""
        log.debug(
            "fanlog: run %s rank %d delivers %s (%s)",
            info.run_id,
            info.rank,
            f"through the delivery agent: {[e.name for e in self._agent_slots]}"
            if self._agent_slots
            else "from threads",
            why,
        )
        self._dispatchers = [self._dispatcher(entry) for entry in self._delivering]

    def _dispatcher(self, entry: BackendSlot) -> threading.Thread:
        return threading.Thread(
            target=self._dispatch_loop, args=(entry,), name=f"fanlog-{entry.name}", daemon=True
        )

    def start(self) -> None:
        """Start the journal writer, the delivery agent (if it has backends) and one
        dispatcher thread per backend it does not deliver."""
        self._writer.start()
        if self._agent_slots:
            self._start_agent()
        for thread in self._dispatchers:
            thread.start()

    def _start_agent(self) -> None:
        """Start the agent; where no process can be started, deliver from threads instead."""
        self.agent = AgentProcess(
            self.journal.path, self.info, self.settings, self._agent_specs, self._agent_event
        )
        try:
            self.agent.start()
        except OSError as exc:
            self._notify(
                f"fanlog: cannot start the delivery agent ({exc}); the trackers are "
                "delivered from threads of this process instead"
            )
            self.agent = None
            for entry in self._agent_slots:
                entry.agent = entry.backend.remote = False
                self._delivering.append(entry)
                self._dispatchers.append(self._dispatcher(entry))
            self._agent_slots = []
            self.delivery = "thread"

    def agent_problems(self, timeout: float) -> list[str]:
        """Wait up to `timeout` for the agent to build its trackers; what went wrong (strict
        mode raises it at create_logger_context)."""
        agent = self.agent
        if agent is None:
            return []
        if not agent.wait_ready(timeout):
            return [f"the delivery agent did not start within {timeout:.0f} s (see {agent.log_path})"]
        if agent.gone:
            return [f"the delivery agent could not be started (see {agent.log_path})"]
        return [
            f"the delivery agent could not build tracker {name!r} (see {agent.log_path})"
            for name in agent.failed
        ]

    # ------------------------------------------------------------ caller side
    def submit(self, record: Pending) -> None:
        """Hand a record over. Waits only when `max_pending` records are still in memory."""
        pending = self.pending
        if len(pending) >= self.settings.max_pending and not self._wait_for_room():
            self.dropped += 1
            if self.dropped == 1:
                warnings.warn(
                    f"fanlog: the journal writer is {self.settings.max_pending} records behind; "
                    "records are being dropped (see Logger.dropped)",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return
        pending.append(record)
        self.submitted += 1
        if self._writer_idle:  # the first record of a batch: wake the writer (once)
            self._writer_idle = False
            self._wake.put(False)

    def wake_writer(self) -> None:
        """Have the writer write what it holds now (flush, close, a full queue)."""
        self._writer_idle = False
        self._wake.put(True)

    def capture(self, source: str, identifier: str) -> Captured | CaptureFailed:
        """Take an artifact into the journal's files area now, on the caller's thread.

        A file system error is not raised into the loop: the record is set aside by the writer
        with the reason (and reported), and a warning names the file now.
        """
        files_dir = os.path.join(self.journal.run_dir, self.journal.files)
        try:
            return capture(source, identifier, files_dir, self.settings.capture)
        except OSError as exc:
            reason = f"{type(exc).__name__}: {exc.strerror or exc}"
            warnings.warn(
                f"fanlog: could not capture the artifact {source!r} ({identifier!r}) into "
                f"the run: {reason}; it is reported as a journal error",
                RuntimeWarning,
                stacklevel=4,
            )
            return CaptureFailed(source, reason)

    def _wait_for_room(self) -> bool:
        deadline = time.monotonic() + self.settings.max_block
        self.wake_writer()
        while len(self.pending) >= self.settings.max_pending:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until all submitted records are committed and delivered to every backend that
        is not down (failing, or stalled in one call, for `down_after` seconds). False if the
        timeout came first or a backend is down."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = self._drain(lambda: deadline) and self._wait_delivered(lambda: deadline)
        self._check_wal()
        if self.journal.file_lost is not None:
            done = False  # nothing logged is durable any more
        return done

    def flush_journal(self, timeout: float | None = None) -> bool:
        """Wait until every record submitted so far is committed (or held in the spill)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._drain(lambda: deadline)

    def _drain(self, deadline: Callable[[], float | None]) -> bool:
        """Wait until the writer has taken every record submitted so far. False if the time
        ran out, or the writer stopped (a fanlog bug, reported) with records still to take."""
        target_count = self.submitted
        self.wake_writer()
        with self._progress:
            self._wait(lambda: self.written >= target_count or not self._writer.is_alive(), deadline)
            return self.written >= target_count

    def _wait_delivered(self, deadline: Callable[[], float | None]) -> bool:
        """Wait for every tracker to have what was accepted so far. A failing tracker gets
        one attempt now (its backoff is cut short: it may be back up) before it counts as
        down; one stalled in a call for `down_after` is down at once."""
        with self._progress:
            target = self.accepted
            down_after = self.settings.down_after
            tried = {id(e): e.attempts for e in self._delivering}
            for entry in self._delivering:
                entry.hurry.set()
            delivered = all(
                self._wait(
                    lambda e=e: (
                        e.delivered >= target
                        or e.closed  # type: ignore[misc]
                        or e.down(down_after, tried[id(e)])
                    ),
                    deadline,
                )
                and e.delivered >= target
                for e in self._delivering
            )
        if self._agent_slots:
            delivered = self._wait_for_agent(deadline) and delivered
        return delivered and not self.spill  # not durable while records exist only in memory

    def _wait(self, predicate: Callable[[], bool], deadline: Callable[[], float | None]) -> bool:
        """Condition wait that re-checks time-based predicates (and the deadline, which a signal
        handler may move) at least every 0.1 s."""
        while not predicate():
            remaining = _remaining(deadline())
            if remaining == 0.0:
                return False
            self._progress.wait(0.1 if remaining is None else min(remaining, 0.1))
        return True

    def interrupt(self, status: RunStatus | None = None, within: float = 0.0, drain: bool = False) -> None:
        """Called from a signal handler while `close()` runs: stop waiting for trackers after
        `within` seconds, and close with `status` if given. With `drain` (SIGTERM), the
        journal drain gets `within` seconds as well; else (Ctrl-C) it goes on."""
        deadline = time.monotonic() + within
        self._close_deadline = min(self._close_deadline, deadline)
        if status is not None:
            self._close_status, self._interrupted = status, True
        if drain:
            self._drain_deadline = min(self._drain_deadline, deadline)

    def close(self, status: RunStatus, timeout: float | None = None) -> bool:
        """Drain into the journal, wait for the trackers, close them with `status`.

        Returns False if something is left undelivered or a tracker refused a record. The
        journal drain is bounded by `timeout` (the close_timeout) only; `interrupt()` cuts the
        wait for trackers short.
        """
        timeout = self.settings.close_timeout if timeout is None else timeout
        if not self._interrupted:  # a signal that landed before the close decided already
            self._close_status = status
        until = time.monotonic() + timeout
        self._drain_deadline = min(self._drain_deadline, until)
        self._close_deadline = min(self._close_deadline, until)
        drained = self._drain(lambda: self._drain_deadline)
        if drained:
            self._wait_delivered(lambda: self._close_deadline)
        self._closing = True
        self._stop_dispatch.set()
        self._wake_dispatchers(hurry=True)
        self.wake_writer()
        self._writer.join(_remaining(self._drain_deadline))
        self._wait_for_dispatchers()
        status = self.status = self._close_status
        for entry in self.slots:
            if not entry.backend.needs_delivery:
                entry.closed = True
                _safe(entry.backend.close, status)
        if self.spill and not self._writer.is_alive():  # the spill belongs to the writer
            self._recover(force=True)
        if self.spill:
            self._warn(
                f"fanlog: the journal {self.journal.path} could not be written; "
                f"{len(self.spill)} record(s) reached the trackers but are not in the journal"
            )
        _safe(self.journal.set_meta, {"status": status.value, "ended": time.time()})
        if self.agent is not None:
            self._let_agent_go()
        self._check_wal()
        if self._writer.is_alive():  # out of time while still writing: leave its connection open
            self._warn(
                f"fanlog: {self.submitted - self.written} record(s) were still being "
                f"written to {self.journal.path} when the close ran out of time"
            )
        else:
            self._close_journal()
        self.closed.set()
        # judged after the dispatchers' last attempts: a tracker back up in time got it all
        delivered = all(e.delivered >= self.committed for e in self._delivering)
        refused = any(e.rejected for e in self.slots)
        lost = self.journal.file_lost is not None
        return (
            drained
            and delivered
            and not self.spill
            and not refused
            and not self.unstored
            and not lost
            and all(e.closed for e in self.slots)
        )

    def abort(self) -> None:
        """Undo a start that was interrupted: stop the threads that started (a tracker run a
        dispatcher opened is closed killed), close the journal and release its lock."""
        now = time.monotonic()
        self._close_status, self._interrupted = RunStatus.KILLED, True
        self._close_deadline = self._drain_deadline = now + 1.0
        self._closing = True
        self._stop_dispatch.set()
        self._wake_dispatchers(hurry=True)
        self.wake_writer()
        if self._writer.is_alive():
            self._writer.join(1.0)
        self._wait_for_dispatchers()
        if not self._writer.is_alive():
            _safe(self.journal.set_meta, {"status": RunStatus.KILLED.value, "ended": time.time()})
            self._close_journal()
        self.status = RunStatus.KILLED
        self.closed.set()

    def _close_journal(self) -> None:
        """Close the journal; after a lost -wal file, count what really reached the database."""
        if self.journal.file_lost is not None:
            _safe(self.journal.close)
            self._warn(f"fanlog: {self.journal.file_lost}")
            return
        expected = self.journal.count() if self.journal.wal_lost else None
        _safe(self.journal.close)
        if expected is None:
            return
        try:
            conn = connect(self.journal.path, readonly=True)
            try:
                stored = int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
            finally:
                conn.close()
        except Exception as exc:  # noqa: BLE001 - the journal file itself is damaged
            stored = 0
            log.warning("fanlog: cannot read %s back: %r", self.journal.path, exc)
        if stored < expected:
            message = (
                f"fanlog: {expected - stored} of {expected} record(s) are missing from "
                f"{self.journal.path} because its -wal file was deleted during the run"
            )
            self._report("journal", RuntimeError(message))
            self._warn(message)

    # ------------------------------------------------------------ writer thread
    def _write_loop(self) -> None:
        """The writer thread: write until closed, surviving its own failures (see below)."""
        while True:
            try:
                self._write_until_closed()
                return
            except BaseException as exc:  # noqa: BLE001 - a fanlog bug: never die silently
                if not self._writer_failed(exc):
                    return

    def _write_until_closed(self) -> None:
        """Sleep until log() hands a record over, let a batch gather for half the flush
        interval, write it, and so on; no timer runs while nothing is logged.

        Half the interval leaves the other half for the writing itself, so that no record
        waits in memory longer than ``flush_interval``. flush(), close and a full queue
        cut the wait short (:meth:`wake_writer`).
        """
        pending = self.pending
        window = self.settings.flush_interval / 2
        hurried = False
        since = time.monotonic()
        while True:
            if self.spill:
                self._recover()
            hurried = self._take_tokens() or hurried
            if not pending:
                if self._closing:
                    return
                self._writer_idle = True
                if not pending:  # else log() appended before it could see the flag
                    hurried = self._sleep(self.settings.retry_initial if self.spill else None)
                self._writer_idle = False
                since = time.monotonic()
                continue
            remaining = since + window - time.monotonic()
            if remaining > 0 and not hurried and len(pending) < WRITE_BATCH:
                hurried = self._sleep(remaining)
                continue
            since = time.monotonic()
            hurried = False
            for _ in range(-(-len(pending) // WRITE_BATCH)):  # what is here now, batch by batch
                self._write_batch([pending.popleft() for _ in range(min(WRITE_BATCH, len(pending)))])

    def _sleep(self, timeout: float | None) -> bool:
        """Wait for a token (at most `timeout` seconds); True if one asked to write now."""
        try:
            hurried = self._wake.get(timeout=timeout)
        except queue.Empty:
            return False
        return self._take_tokens() or hurried

    def _take_tokens(self) -> bool:
        """Empty the token queue; True if a token asked to write now."""
        hurried = False
        while not self._wake.empty():
            hurried = self._wake.get_nowait() or hurried
        return hurried

    def _write_batch(self, batch: list[Pending]) -> None:
        """Encode `batch` and insert it in one transaction; into the spill while the journal
        cannot be written."""
        self._in_flight = batch
        aside: list[SetAside] = []
        rows = self.journal.encode(batch, self.accepted + 1, self._unstored, aside)
        if not self.spill:
            try:
                self.journal.insert(rows, aside, on_error=self._unstored, on_escaped=self._escaped)
            except Exception as exc:  # noqa: BLE001 - disk full, read-only save dir, ...
                self._journal_failed(exc)
            else:
                with self._spill_lock:
                    if rows:
                        self.committed = self.accepted = rows[-1][0]
                self._in_flight = []
                self._writer_crashes = 0
                self._written(len(batch))
                self._check_wal()
                return
        self._aside.extend(aside)  # set aside in the journal once it can be written
        self._spill_rows(rows)
        self._in_flight = []
        self._written(len(batch))

    def _writer_failed(self, exc: BaseException) -> bool:
        """The writer loop raised: a fanlog bug, since a record's own errors are isolated.

        Report it; retry the batch it was writing once, then set that batch aside in the
        journal; after WRITER_RETRIES failures in a row, stop. Returns False to stop: then
        flush() and destroy return False, and the summary says how many records wait.
        """
        self._writer_crashes += 1
        batch, self._in_flight = self._in_flight, []
        reason = f"the journal writer failed: {safe_repr(exc)}"
        self._report("journal", RuntimeError(reason))
        if self._writer_crashes > WRITER_RETRIES:
            self.pending.extendleft(reversed(batch))
            self.writer_error = exc
            self._notify(
                f"fanlog: {reason}; it failed {WRITER_RETRIES} times in a row and "
                f"stopped: records logged from now on are not written to "
                f"{self.journal.path}, and flush() returns False"
            )
            with self._progress:
                self._progress.notify_all()
            return False
        if self._writer_crashes == 1:
            self.pending.extendleft(reversed(batch))  # maybe a passing fault: try it again
        elif batch:
            try:
                self._set_aside_batch(batch, reason)
            except Exception:  # noqa: BLE001 - the journal cannot take it now: try again later
                self.pending.extendleft(reversed(batch))
        self._notify(f"fanlog: {reason}; it goes on (reported as a journal error)")
        return True

    def _set_aside_batch(self, batch: list[Pending], reason: str) -> None:
        """Store what describes each record of a batch the writer failed on twice."""
        aside = [
            SetAside(None, kind_name(kind), key, step, batch_idx, when, reason)
            for kind, key, _, step, batch_idx, _, when, _, _ in batch
        ]
        self.journal.insert([], aside)
        self.unstored += len(batch)
        self._written(len(batch))

    def _escaped(self, original: str, stored: str) -> None:
        """A key SQLite cannot store as text was stored escaped: say so once per key."""
        if original in self._escaped_keys:
            return
        self._escaped_keys.add(original)
        self._notify(
            f"fanlog: the identifier {ascii(original)} is not valid Unicode text (it "
            "holds a lone surrogate, as os.fsdecode() gives for a name that is not "
            f"UTF-8); it is stored and delivered as {stored!r}"
        )

    def _written(self, count: int) -> None:
        with self._progress:
            self.written += count
            self._progress.notify_all()
        self._wake_dispatchers()

    def _wake_dispatchers(self, hurry: bool = False) -> None:
        for entry in self.slots:
            entry.wake.set()
            if hurry:
                entry.hurry.set()

    # ------------------------------------------------------------ journal fault path
    def _journal_failed(self, exc: BaseException) -> None:
        """First failure of an outage: warn once, then keep going from memory."""
        self.journal_error = exc
        self._next_retry = time.monotonic() + self.settings.retry_initial
        self._report("journal", exc)
        self._notify(
            f"fanlog: cannot write the journal {self.journal.path} ({exc}); records are kept in "
            f"memory (up to spill_max={self.settings.spill_max}) and still delivered to the "
            "trackers, and moved into the journal when it is writable again"
        )

    def _spill_rows(self, rows: list[Row]) -> None:
        if not rows:
            return
        with self._spill_lock:
            self.spill.extend(rows)
            self.accepted = rows[-1][0]
            overflow = len(self.spill) - self.settings.spill_max
            for _ in range(max(0, overflow)):
                self.spill.popleft()
            if overflow > 0:
                self.spill_dropped += overflow

    def _recover(self, force: bool = False) -> None:
        """Move the spill into the journal if it can be written again (at most every retry)."""
        now = time.monotonic()
        if not force and now < self._next_retry:
            return
        self._next_retry = now + self.settings.retry_initial
        rows = list(self.spill)  # only this thread changes the spill
        try:
            self.journal.insert(rows, self._aside, on_error=self._unstored, on_escaped=self._escaped)
        except Exception as exc:  # noqa: BLE001 - still full / read-only: keep spilling
            self.journal_error = exc
            return
        self._aside.clear()
        with self._spill_lock:
            for _ in range(len(rows)):
                self.spill.popleft()
            self.committed = self.journal.last_seq
        self.journal_error = None
        self._wake_dispatchers()
        log.warning(
            "fanlog: the journal %s is writable again; %d record(s) moved into it",
            self.journal.path,
            len(rows),
        )
        with self._progress:
            self._progress.notify_all()

    @staticmethod
    def _warn(message: str) -> None:
        """A warning on the caller's thread (close); background threads use `_notify`."""
        warnings.warn(scrub_text(message), RuntimeWarning, stacklevel=2)

    def _unstored(self, exc: BaseException, key: str) -> None:
        """One record could not be stored: it is set aside in the journal; count and report it."""
        self.unstored += 1
        self._report(
            "journal",
            RuntimeError(
                f"record {key!r} could not be stored: {exc!r}; it is set aside in the journal's "
                "'unstored' table"
            ),
        )

    def _check_wal(self) -> None:
        """Report a -wal file deleted or replaced under the writer (writer thread, or close)."""
        message = self.journal.check_wal()
        if message is not None:
            self._report("journal", RuntimeError(message))
            self._notify(f"fanlog: {message}")

    # ------------------------------------------------------------ dispatchers
    def _dispatch_loop(self, entry: BackendSlot) -> None:
        settings = self.settings
        reader = Journal(self.journal.path)
        delay = settings.retry_initial
        try:
            while not entry.abandoned:
                stopping = self._stop_dispatch.is_set()
                if not entry.opened:
                    opened = self._attempt(entry, lambda: entry.backend.open(self.info))
                    entry.attempts, entry.attempted_at = entry.attempts + 1, time.monotonic()
                    if not opened:
                        if stopping and self._give_up(entry):
                            return
                        self._pause(entry, delay, stopping)
                        delay = min(delay * 2, settings.retry_max)
                        continue
                    entry.opened = True
                entry.wake.clear()  # before reading the target: a commit after this sets it
                target = self.accepted
                if entry.delivered < target:
                    if self._deliver(entry, reader, target):
                        delay = settings.retry_initial
                        continue
                    if stopping and self._give_up(entry):
                        return  # the rest waits in the journal for `fanlog sync`
                    self._pause(entry, delay, stopping)
                    delay = min(delay * 2, settings.retry_max)
                    continue
                if stopping and not self._writer.is_alive() and entry.delivered >= self.accepted:
                    self._attempt(entry, entry.backend.flush)
                    if self._attempt(entry, lambda: entry.backend.close(self._close_status)):
                        entry.closed = True
                    return
                if stopping:
                    time.sleep(0.005)  # the writer is committing its last batch
                else:
                    entry.wake.wait()  # until the writer commits more, or close
        finally:
            reader.close()
            with self._progress:
                self._progress.notify_all()

    def _pause(self, entry: BackendSlot, delay: float, stopping: bool) -> None:
        """Back off before a retry (a flush or the close cuts it short); while closing, never
        past the close deadline."""
        if stopping:
            delay = max(0.0, min(delay, self._close_deadline - time.monotonic()))
        woken = entry.hurry.wait(delay)
        entry.hurry.clear()
        gap = entry.attempted_at + MIN_RETRY_GAP - time.monotonic()  # however often flush wakes it
        if woken and gap > 0 and not stopping:
            time.sleep(gap)

    def _give_up(self, entry: BackendSlot) -> bool:
        """While closing: stop retrying a backend that is down or out of time."""
        return time.monotonic() >= self._close_deadline or entry.down(self.settings.down_after)

    def _deliver(self, entry: BackendSlot, reader: Journal, target: int) -> bool:
        """Deliver one batch (or skip ahead if nothing is for this backend). False on failure."""
        limit = entry.backend.max_batch
        with self._spill_lock:  # a consistent view: journal up to `committed`, then the spill
            committed, target = self.committed, self.accepted
            spilled = list(self.spill) if target > committed else []
        batch = []
        if entry.delivered < committed:
            batch = reader.read(
                entry.delivered, upto=committed, slot=entry.slot, limit=limit, rank=self.info.rank
            )
        if len(batch) < limit and spilled:
            after = max(entry.delivered, committed)
            for row in spilled:
                if row[SEQ] > after and row[MASK] & entry.bit:
                    batch.append(reader.row_record(row, self.info.rank))
                    if len(batch) >= limit:
                        break
        if not batch:
            self._advance(entry, reader, target)
            return True
        start = entry.delivered
        delivery = BatchDelivery(
            entry.backend,
            stored=lambda seq: self._stored(entry, reader, seq),
            rejected=lambda record, exc: self._rejected(entry, reader, record, exc),
            isolate=self._isolating(entry),
            watch=entry.watch,
            failed=lambda exc: self._failed(entry, exc),
            trusted=entry.trusted,
        )
        error = delivery.run(batch)
        entry.attempts, entry.attempted_at = entry.attempts + 1, time.monotonic()
        entry.trusted = delivery.stored_any
        if error is not None and delivery.refused_all:
            refusal = RuntimeError(
                f"{entry.name} refuses every record for one same reason, so the tracker (or a "
                f"proxy before it) is not working; nothing is marked refused, and delivery is "
                f"retried: {reason_of(error)}"
            )
            refusal.__cause__ = error
            error = refusal
        if error is not None:
            entry.stuck = entry.stuck + 1 if entry.delivered == start else 1
            self._failed(entry, error, reader)
            return False
        entry.stuck = 0
        last = batch[-1].seq if len(batch) >= entry.backend.max_batch else target
        self._stored(entry, reader, last)
        return True

    def _advance(self, entry: BackendSlot, reader: Journal, seq: int) -> None:
        try:
            reader.set_delivered(entry.name, seq)
        except Exception:  # noqa: BLE001 - journal not writable: the cursor lives in memory
            pass
        with self._progress:
            entry.delivered = seq
            self._progress.notify_all()

    def _attempt(self, entry: BackendSlot, call: Callable[[], object]) -> bool:
        try:
            with entry.watch():
                call()
        except Exception as exc:  # noqa: BLE001
            self._failed(entry, exc)
            return False
        return True

    def _failed(self, entry: BackendSlot, exc: BaseException, reader: Journal | None = None) -> None:
        """Count and report a failure; with `reader`, also note it in the journal's delivery table
        (what `fanlog ls` shows), until the next successful delivery clears it."""
        if reader is not None:
            try:
                reader.set_delivered(entry.name, entry.delivered, error=repr(exc)[:500])
            except Exception:  # noqa: BLE001 - journal not writable: the error is still reported
                pass
        if entry.failing_since is None:
            entry.failing_since = time.monotonic()
        with self._progress:
            self._progress.notify_all()
        self._report(entry.name, exc)

    def _report(self, name: str, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(name, exc)
        else:
            log.warning("fanlog backend %s failed: %r", name, exc)

    # ------------------------------------------------------------ refused records, stalled calls
    def _stored(self, entry: BackendSlot, reader: Journal, seq: int) -> None:
        """The tracker took everything up to `seq`: it works, whatever failed before."""
        entry.failing_since = None
        self._advance(entry, reader, seq)

    def _rejected(self, entry: BackendSlot, reader: Journal, record: Record, exc: BaseException) -> None:
        """Mark a record the tracker refused for good, report it, and move past it."""
        reason = scrub_text(reason_of(exc))
        try:
            reader.reject(entry.name, record.seq, reason)
        except Exception:  # noqa: BLE001 - journal not writable: kept in memory, reported below
            pass
        entry.rejected.append((record.seq, record.kind, record.key, reason))
        report = RecordRejected(
            f"{entry.name} refused {record.kind} {record.key!r} (seq {record.seq}) for good; "
            f"it is kept in the journal and skipped: {reason}",
            record.seq,
        )
        report.__cause__ = exc
        self._report(entry.name, report)
        self._advance(entry, reader, record.seq)

    def _isolating(self, entry: BackendSlot) -> bool:
        """Look for a bad record after `isolate_after` failures in a row, then 2x, 4x, ..."""
        every = max(1, self.settings.isolate_after)
        rounds, rest = divmod(entry.stuck, every)
        return rest == 0 and rounds > 0 and rounds & (rounds - 1) == 0

    def _wait_for_dispatchers(self) -> None:
        """Join the dispatchers until the close deadline (which `interrupt()` may bring
        forward); one stalled in a tracker call for `down_after` seconds is abandoned (a
        daemon thread; its records stay in the journal)."""
        down_after = self.settings.down_after
        grace = time.monotonic() + 0.5  # a last close call may still finish
        for entry, thread in zip(self._delivering, self._dispatchers, strict=True):
            while thread.is_alive():
                until = max(self._close_deadline, grace)
                if entry.watch.stalled_for() >= down_after or time.monotonic() >= until:
                    entry.abandoned = True
                    break
                thread.join(0.05)

    # ------------------------------------------------------------ the delivery agent
    def _agent_event(self, event: dict[str, Any]) -> None:
        """An event from the agent (on its reader thread): report what the user must hear."""
        kind, name = event.get("event"), str(event.get("backend") or "")
        entry = next((e for e in self._agent_slots if e.name == name), None)
        if kind == "opened" and entry is not None:
            entry.opened = True
            entry.backend.take_info(event.get("info") or {})
        elif kind == "rejected" and entry is not None:
            entry.rejected.append(
                (int(event["seq"]), str(event.get("kind")), str(event.get("key")), str(event.get("reason")))
            )
            self._report(name, AgentReport(str(event.get("error")), int(event["seq"])))
        elif kind == "error":
            if entry is not None and event.get("fatal"):
                entry.health = {"state": "failed", "error": event.get("error")}
            self._report(name or "delivery agent", AgentReport(str(event.get("error"))))
        elif kind == "restarted":
            self._notify(f"fanlog: {event.get('message')}")
        elif kind == "gone":
            for gone in self._agent_slots:
                gone.agent_gone = True
                self._report(gone.name, AgentReport(f"RuntimeError({event.get('message')!r})"))
            with self._progress:
                self._progress.notify_all()

    def _read_agent_progress(self) -> None:
        """The agent's cursors and health, as the journal holds them now."""
        reader = self._agent_reader
        if reader is None:
            reader = self._agent_reader = Journal(self.journal.path)
        cursors, health = reader.cursors(), reader.health()
        for entry in self._agent_slots:
            entry.delivered = max(entry.delivered, cursors.get(entry.name, 0))
            entry.health = health.get(entry.name, entry.health)
            entry.closed = (entry.health or {}).get("state") == "closed"

    def _wait_for_agent(self, deadline: Callable[[], float | None]) -> bool:
        """Wait until the agent's cursors reach every committed record, or their trackers are
        down (polling the journal every AGENT_POLL seconds, only while waiting)."""
        target = self.committed
        down_after = self.settings.down_after
        if self.agent is not None:
            self.agent.wake()
        while True:
            try:
                self._read_agent_progress()
            except Exception as exc:  # noqa: BLE001 - the journal cannot be read: not delivered
                log.warning("fanlog: cannot read the delivery agent's progress: %r", exc)
                return False
            waiting = [e for e in self._agent_slots if e.delivered < target and not e.closed]
            if all(e.down(down_after) for e in waiting):
                return not waiting
            remaining = _remaining(deadline())
            if remaining == 0.0:
                return False
            time.sleep(AGENT_POLL if remaining is None else min(remaining, AGENT_POLL))

    def _let_agent_go(self) -> None:
        """At close, after the journal says how the run ended: let the agent close the
        trackers' runs, and wait for it until the close deadline; after that it goes on alone
        (for up to agent_linger seconds without progress) and the summary says so."""
        agent = self.agent
        assert agent is not None
        agent.wake()
        exited = agent.let_go(lambda: self._close_deadline)
        try:
            self._read_agent_progress()
        except Exception:  # noqa: BLE001 - reported as not delivered
            pass
        if self._agent_reader is not None:
            _safe(self._agent_reader.close)
            self._agent_reader = None
        self._agent_left = not exited and not agent.gone

    def problems(self) -> list[str]:
        """Lines for the end-of-run summary: stalled trackers, refused records, records not
        delivered (with the ``fanlog sync`` command that delivers them) and records dropped."""
        lines = []
        for entry in self._agent_slots:
            since = (entry.health or {}).get("stalled_since")
            if since is not None and not entry.closed:
                lines.append(
                    f"  {entry.name}: its tracker has not answered the delivery agent's "
                    f"call for {time.time() - since:.0f} s"
                )
        for entry in self.slots:
            stalled = entry.watch.stalled_for()
            if entry.abandoned and stalled:
                lines.append(
                    f"  {entry.name}: its tracker has not answered a call for {stalled:.0f} s; "
                    "fanlog stopped waiting for it"
                )
            if entry.rejected:
                shown = "; ".join(
                    f"seq {seq} {kind} {key!r}: {reason[:200]}"
                    for seq, kind, key, reason in entry.rejected[:3]
                )
                more = f"; and {len(entry.rejected) - 3} more" if len(entry.rejected) > 3 else ""
                lines.append(
                    f"  {entry.name}: {len(entry.rejected)} record(s) refused for good, kept in the "
                    f"journal (`fanlog show` lists them, `fanlog sync --retry-rejected` tries them "
                    f"again): {shown}{more}"
                )
        for entry in self.slots:
            if entry.delivered < self.committed and not entry.closed:
                cursor = "" if entry.name == entry.backend.name else f" --cursor {entry.name}"
                sync = f"`fanlog sync {self.journal.path} --to {entry.backend.name}{cursor}`"
                if entry.agent and self._agent_left:
                    assert self.agent is not None
                    lines.append(
                        f"  {entry.name}: records {entry.delivered + 1}..{self.committed} not "
                        f"delivered yet; the delivery agent (pid {self.agent.pid}) goes on "
                        f"delivering them in the background, for up to "
                        f"{self.settings.agent_linger:.0f} s without progress (its log: "
                        f"{self.agent.log_path}; `fanlog ls` shows when they are); if it cannot, "
                        f"run {sync}"
                    )
                    continue
                lines.append(
                    f"  {entry.name}: records {entry.delivered + 1}..{self.committed} not delivered;"
                    f" run {sync} to deliver them"
                )
        if self.dropped:
            lines.append(f"  {self.dropped} record(s) dropped at the max_pending bound")
        if self.writer_error is not None:
            lines.append(
                f"  the journal writer stopped ({safe_repr(self.writer_error)}); "
                f"{len(self.pending)} record(s) were not written"
            )
        if self.spill_dropped:
            lines.append(
                f"  {self.spill_dropped} record(s) dropped from memory beyond spill_max "
                "while the journal could not be written"
            )
        return lines


AGENT_POLL = 0.02
"""Seconds between two looks at the agent's cursors while flush() or destroy waits for them."""


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _log_warning(message: str) -> None:
    log.warning("%s", message)


def _safe(call: Callable[..., object], *args: object) -> None:
    try:
        call(*args)
    except Exception as exc:  # noqa: BLE001
        log.warning("fanlog: %r", exc)
