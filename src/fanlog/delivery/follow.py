"""Following a live journal: each record goes to each tracker soon after it is committed.

The delivery agent (:mod:`fanlog.delivery.agent`) and ``fanlog sync --follow`` are this
module: one :class:`Feed` per journal polls its last seq and its status, and one
:class:`Follower` thread per tracker delivers from the tracker's cursor in the journal's
``delivery`` table, through :class:`~fanlog.delivery.dispatch.BatchDelivery` (records a
tracker refuses for good are isolated and marked in the ``rejected`` table, exactly as
``fanlog sync`` and the in-process dispatchers do). The tracker's run stays open across
batches.

How delivery goes is written to the journal's ``health`` table (open, failing since when,
stalled since when, closed, gave up, and what the user may read in the training process,
such as MLflow's run id): the training process reads it to decide ``flush()`` and
``destroy_logger_context()``, and ``fanlog ls`` shows it.

A follower ends when the run has ended (the journal's status is no longer ``running``) or
its writer has let go of it (the process died, or destroy returned), and it has delivered
everything the journal holds: then it closes the tracker's run with the run's status
(``killed`` for a writer that died without closing it). Once the writer has let go, a
tracker that makes no progress for ``agent_linger`` seconds is given up: what is left
waits in the journal for ``fanlog sync``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fanlog.backend import Backend
from fanlog.delivery.dispatch import BatchDelivery, CallWatch
from fanlog.errors import RecordRejected, reason_of
from fanlog.journal import Journal
from fanlog.journal.layout import sync_lock_file
from fanlog.journal.status import RUNNING, end_status
from fanlog.record import Record, RunInfo, RunStatus

if TYPE_CHECKING:
    from fanlog.pipeline import PipelineSettings

log = logging.getLogger(__name__)

POLL_MIN = 0.02
"""Seconds between two looks at the journal right after something changed."""
POLL_MAX = 0.2
"""... growing by half each time nothing changed, up to this."""
HURRY_SECONDS = 10.0
"""After a SIGTERM, how long a tracker may go without progress once the writer let go."""
Event = Callable[[dict[str, Any]], None]
"""Where a follower reports what the training process wants to know (errors, a run id)."""


class CursorBusyError(RuntimeError):
    """Another process (``fanlog sync``, or a delivery agent) delivers to the same cursor."""


@contextlib.contextmanager
def cursor_lock(rank_dir: str, name: str) -> Iterator[None]:
    """One deliverer per (journal, cursor) at a time, across processes: ``fanlog sync``, the
    delivery agent and ``fanlog sync --follow`` all take it."""
    handle = os.open(sync_lock_file(rank_dir, name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CursorBusyError(
                f"another `fanlog sync` or delivery agent is delivering {rank_dir} to {name!r}"
            ) from None
        yield
    finally:
        os.close(handle)


class CrossHostError(RuntimeError):
    """A live journal on another host: SQLite's WAL cannot be shared between hosts."""


def check_same_host(meta: Mapping[str, Any], path: str) -> None:
    """Refuse to follow a live journal written on another host.

    SQLite's WAL mode keeps its index in shared memory, which is coherent on one host only:
    a reader on another host (a login node, over NFS, Lustre or GPFS) may read a torn state
    or corrupt the index. A journal whose run has ended can be read from anywhere.
    """
    host = meta.get("host")
    if meta.get("status") != RUNNING or not host or host in _host_names():
        return
    raise CrossHostError(
        f"the journal {path!r} is being written on host {host!r} (pid {meta.get('pid')}); "
        "SQLite's write-ahead log needs shared memory on one host, so a live journal can be "
        f"followed only on {host!r} (run `fanlog sync --follow` there), or synced from here "
        "once the run has ended"
    )


def _host_names() -> set[str]:
    import socket

    return {socket.gethostname(), os.uname().nodename}


def is_down(health: Mapping[str, Any] | None, down_after: float, now: float | None = None) -> bool:
    """Whether a tracker's ``health`` row says it is down: failing, or stalled in one call,
    for `down_after` seconds, or given up. The rule the in-process dispatchers follow too."""
    if not health:
        return False
    if health.get("state") in ("failed", "gave_up"):
        return True
    now = time.time() if now is None else now
    failing, stalled = health.get("failing_since"), health.get("stalled_since")
    return any(since is not None and now - since >= down_after for since in (failing, stalled))


@dataclass
class Target:
    """One tracker to follow a journal for: its cursor name, its mask bit, its backend."""

    name: str
    slot: int | None
    """The tracker's mask bit in the journal; None: every record (a ``sync:<tracker>`` cursor)."""
    backend: Backend


class Feed:
    """What the followers of one journal know about it, from one thread's polls: the last
    committed seq, the run's status, and whether the writer has let go of the run."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.journal = Journal(path)
        self.meta: dict[str, Any] = self.journal.meta()
        self.last_seq = self.journal.last_seq
        self.released = False
        """The process that writes the journal has let go of it (ended, or died)."""
        self.hurry = False
        """A SIGTERM arrived: give up on a tracker sooner once the writer has let go."""
        self.version = 0
        self._changed = threading.Condition()

    @property
    def ended(self) -> bool:
        """The run's status is no longer ``running``: the journal holds every record."""
        return self.meta.get("status") != RUNNING

    @property
    def finished(self) -> bool:
        """No more records will come: the run ended or its writer let go."""
        return self.ended or self.released

    def poll(self) -> bool:
        """Look at the journal once (status first: once it has ended, the seq read after it
        is final). True if something changed."""
        meta = self.journal.meta()
        last = self.journal.committed()
        changed = last != self.last_seq or meta.get("status") != self.meta.get("status")
        self.meta = meta
        if changed:
            self.last_seq = last
            self.wake()
        return changed

    def release(self) -> None:
        """The writer let go: read the journal's final state, then tell the followers."""
        self.poll()
        self.released = True
        self.wake()

    def wake(self) -> None:
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Wait until something changed after version `seen`, or `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != seen, timeout)

    def end_status(self) -> RunStatus:
        """The status the trackers' runs end with (``killed`` for a writer that died)."""
        return end_status(self.meta)

    def close(self) -> None:
        self.journal.close()


class Follower:
    """Delivers one journal to one tracker from its cursor, as records arrive (one thread)."""

    def __init__(
        self, feed: Feed, target: Target, run: RunInfo, settings: PipelineSettings, event: Event
    ) -> None:
        self.feed = feed
        self.name = target.name
        self.slot = target.slot
        self.backend = target.backend
        self.run_info = run
        self.settings = settings
        self._event = event
        self.journal = Journal(feed.path)
        self.delivered = self.journal.delivered(self.name)
        self.watch = CallWatch(self.backend.work_clock)
        self.opened = self.closed = self.gave_up = self.done = False
        self.failing_since: float | None = None
        self.stalled_since: float | None = None
        self.stuck = 0
        self.progress_at = time.monotonic()
        self.thread = threading.Thread(target=self.run, name=f"fanlog-follow-{self.name}", daemon=True)

    # ------------------------------------------------------------ the thread
    def run(self) -> None:
        try:
            self._follow()
        except BaseException as exc:  # noqa: BLE001 - a bug must not pass in silence
            log.exception("fanlog: delivery to %s stopped", self.name)
            self._health("failed", error=repr(exc))
            self._event({"event": "error", "backend": self.name, "error": repr(exc)})
        finally:
            self.done = True
            self.journal.close()
            self.feed.wake()

    def _follow(self) -> None:
        delay = self.settings.retry_initial
        self._health("opening", pid=os.getpid())
        while True:
            if not self.opened:
                if not self._attempt(lambda: self.backend.open(self.run_info)):
                    if self._give_up_now():
                        return
                    time.sleep(delay)
                    delay = min(delay * 2, self.settings.retry_max)
                    continue
                self._opened()
                delay = self.settings.retry_initial
            seen, target = self.feed.version, self.feed.last_seq
            if self.delivered < target:
                if self._deliver(target):
                    delay = self.settings.retry_initial
                    continue
                if self._give_up_now():
                    return
                time.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max)
                continue
            if self.feed.finished:
                if self.delivered >= self.feed.last_seq:  # final once the run is finished
                    self._close(self.feed.end_status())
                    return
                continue
            self.feed.wait(seen, timeout=1.0)

    # ------------------------------------------------------------ steps
    def _opened(self) -> None:
        self.opened = True
        self.progress_at = time.monotonic()
        info = self.backend.info()
        self._health("open", info=info, failing_since=None, error=None)
        self._event({"event": "opened", "backend": self.name, "info": info})

    def _deliver(self, target: int) -> bool:
        """Deliver one batch (or move past records that are not for this tracker)."""
        limit = self.backend.max_batch
        page = self.journal.read(
            self.delivered, upto=target, slot=self.slot, limit=limit, rank=self.run_info.rank
        )
        supported = self.backend.supported_kinds
        batch = [record for record in page if record.kind in supported]
        if not batch:
            self._advance(page[-1].seq if len(page) >= limit else target)
            return True
        start = self.delivered
        error = BatchDelivery(
            self.backend,
            stored=self._stored,
            rejected=self._rejected,
            isolate=self._isolating(),
            watch=self.watch,
            failed=self._failed,
        ).run(batch)
        if error is not None:
            self.stuck = self.stuck + 1 if self.delivered == start else 1
            self._failed(error, note=True)
            return False
        self.stuck = 0
        self._stored(page[-1].seq if len(page) >= limit else target)
        return True

    def _close(self, status: RunStatus) -> None:
        self._attempt(self.backend.flush)
        if self._attempt(lambda: self.backend.close(status)):
            self.closed = True
            self._health("closed", failing_since=None, stalled_since=None)
            self._event({"event": "closed", "backend": self.name, "status": status.value})

    def _give_up_now(self) -> bool:
        """Once the writer let go: stop after `agent_linger` seconds without progress."""
        if not self.feed.finished:
            return False
        linger = self.settings.agent_linger
        if self.feed.hurry:
            linger = min(linger, HURRY_SECONDS)
        if time.monotonic() - self.progress_at < linger:
            return False
        self.gave_up = True
        left = self.feed.last_seq - self.delivered
        message = (
            f"gave up after {linger:.0f} s without progress; {left} record(s) wait in "
            f"the journal for `fanlog sync`"
        )
        log.warning("fanlog: %s %s", self.name, message)
        self._health("gave_up", error=message)
        if self.opened:
            self._close(self.feed.end_status())
        return True

    # ------------------------------------------------------------ outcomes
    def _attempt(self, call: Callable[[], object]) -> bool:
        try:
            with self.watch():
                call()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return False
        return True

    def _stored(self, seq: int) -> None:
        """The tracker took everything up to `seq`: it works, whatever failed before."""
        if self.failing_since is not None:
            self.failing_since = None
            self._health("open", failing_since=None, error=None)
        self._advance(seq)

    def _advance(self, seq: int) -> None:
        if seq <= self.delivered:
            return
        self.journal.set_delivered(self.name, seq)
        self.delivered = seq
        self.progress_at = time.monotonic()

    def _rejected(self, record: Record, exc: BaseException) -> None:
        reason = reason_of(exc)
        self.journal.reject(self.name, record.seq, reason)
        report = RecordRejected(
            f"{self.name} refused {record.kind} {record.key!r} (seq {record.seq}) for good; "
            f"it is kept in the journal and skipped: {reason}",
            record.seq,
        )
        self._event(
            {
                "event": "rejected",
                "backend": self.name,
                "seq": record.seq,
                "kind": record.kind,
                "key": record.key,
                "reason": reason,
                "error": repr(report),
            }
        )
        self._advance(record.seq)

    def _failed(self, exc: BaseException, note: bool = False) -> None:
        """Count and report a failure; with `note`, also in the delivery table's error
        column (what ``fanlog ls`` shows), until the next success clears it."""
        if note:
            self.journal.set_delivered(self.name, self.delivered, error=repr(exc)[:500])
        if self.failing_since is None:
            self.failing_since = time.time()
            self._health("failing", failing_since=self.failing_since, error=repr(exc))
        self._event({"event": "error", "backend": self.name, "error": repr(exc)})

    def _isolating(self) -> bool:
        """Look for a bad record after `isolate_after` failures in a row, then 2x, 4x, ..."""
        every = max(1, self.settings.isolate_after)
        rounds, rest = divmod(self.stuck, every)
        return rest == 0 and rounds > 0 and rounds & (rounds - 1) == 0

    # ------------------------------------------------------------ health
    def check_stalled(self, after: float) -> None:
        """Record (from the monitoring thread) a call stalled for `after` seconds or more,
        and clear it once the call is over."""
        stalled = self.watch.stalled_for()
        if stalled >= after and self.stalled_since is None:
            self.stalled_since = time.time() - stalled
            self._health(self._state(), stalled_since=self.stalled_since)
        elif stalled == 0.0 and self.stalled_since is not None:
            self.stalled_since = None
            self._health(self._state(), stalled_since=None)

    def _state(self) -> str:
        if self.closed:
            return "closed"
        if not self.opened:
            return "opening"
        return "failing" if self.failing_since is not None else "open"

    def _health(self, state: str, **fields: Any) -> None:
        try:
            self.journal.set_health(self.name, state, **fields)
        except Exception as exc:  # noqa: BLE001 - a journal that cannot be written: say so
            log.warning("fanlog: cannot record the state of %s in the journal: %r", self.name, exc)
