"""Handing one batch to one backend: what got stored, what is refused for good, what to retry.

Live delivery (one dispatcher thread per backend) and ``fanlog sync`` both deliver
through :class:`BatchDelivery`, so a record a tracker refuses is treated the same way in
both: it is isolated (by bisection when the tracker does not say which record it was),
reported through `rejected`, and the records after it go on. Only transient failures
(an unreachable or overloaded tracker) stop a batch; they are retried later from the
cursor, so nothing is lost and, since a backend reports a stored prefix with
:class:`~fanlog.errors.PartialDelivery`, nothing is sent twice.

:class:`CallWatch` times the backend call in progress, so that a tracker that accepts a
connection and never answers counts as down instead of holding ``flush()`` hostage.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fanlog.backend import Backend
from fanlog.errors import PERMANENT, PartialDelivery, RecordRejected, reason_of
from fanlog.record import Record

Stored = Callable[[int], None]
"""Called with a seq once every record of the batch up to it is stored or rejected."""
Rejected = Callable[[Record, BaseException], None]
"""Called for a record the tracker can never store, with the error that says why."""
MAX_SUSPECTS = 3
"""Records failing alone, in a row, before a pass concludes that the tracker is down."""
MAX_HELD = 20
"""Records refused alone for one same reason, before anything was stored, after which a
pass concludes that the tracker refuses everything."""


class BatchDelivery:
    """One attempt at delivering a batch, in seq order, isolating refused records.

    A permanent error (:meth:`Backend.classify`) never stops the batch: the refused
    record is found (from ``RecordRejected.seq``, else by writing halves of the batch),
    handed to `rejected`, and the rest is written. A transient error ends the attempt,
    unless `isolate` is set (the same batch keeps failing): then the batch is bisected
    too, and a record that fails alone, twice, while a record after it is stored, is
    rejected as one the tracker keeps failing on (when :data:`MAX_SUSPECTS` records in a
    row fail alone, the tracker is down instead, and the pass ends).

    A refusal says something about the record only once the tracker has shown that it
    works. Until a record of the pass is stored, records refused alone are *held*, and the
    pass goes on: once a record after them is stored, they are refused for good. When
    :data:`MAX_HELD` in a row are refused for one same reason, or the pass ends with held
    records and the tracker is not `trusted` (it stored nothing in its last pass), the
    tracker refuses everything (a proxy or an old server answering 400 to every request):
    the pass ends as a failure, nothing is marked, and `refused_all` is set. Held records
    of a trusted tracker with nothing after them are refused for good.
    """

    def __init__(
        self,
        backend: Backend,
        stored: Stored,
        rejected: Rejected,
        isolate: bool = False,
        watch: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
        failed: Callable[[BaseException], None] | None = None,
        trusted: bool = True,
    ) -> None:
        self.backend = backend
        self._stored = stored
        self._rejected = rejected
        self.isolate = isolate
        self._watch = watch
        self._failed = failed
        """Told of each transient failure the pass goes on after (while isolating)."""
        self._suspects: list[tuple[Record, BaseException]] = []
        self._held: list[tuple[Record, BaseException]] = []
        """Records refused alone before anything of the pass was stored."""
        self.stored_any = False
        """Set once a record of the pass is stored."""
        self.trusted = trusted
        self.refused_all = False
        """Set when the last run() ended because the tracker refuses every record."""

    def run(self, records: Sequence[Record]) -> BaseException | None:
        """Deliver `records`. None when every one is stored or rejected; else the transient
        error that stopped it (the records after the last `stored` seq are still to send)."""
        self._suspects, self._held, self.stored_any = [], [], False
        self.refused_all = False
        error = self._deliver(list(records))
        if error is None and self._suspects:  # nothing after them to compare with
            error = self._suspects[0][1]
        if error is None and self._held:  # fewer than MAX_SUSPECTS, and nothing after them
            if not self.trusted:
                return self._refusing_all(self._held[0][1])
            self._settle_held()
        return error

    # ------------------------------------------------------------ internals
    def _deliver(self, records: list[Record]) -> BaseException | None:
        while records:
            done, cause = self._attempt(records)
            records = records[done:]
            if cause is None or not records:
                continue
            named = self._named_record(cause, records)
            if named is not None:  # the backend said which record it refuses
                error = self._deliver(records[:named])
                if error is not None:
                    return error
                self._reject(records[named], cause)
                records = records[named + 1 :]
                continue
            permanent = self.backend.classify(cause) == PERMANENT
            if not permanent and not self.isolate:
                return cause
            if len(records) == 1:
                if permanent:
                    return self._refused_alone(records[0], cause)
                return self._suspect_alone(records[0], cause)
            if not permanent:
                self._went_on_after(cause)
            half = len(records) // 2
            error = self._deliver(records[:half])
            if error is not None:
                return error
            records = records[half:]
        return None

    def _attempt(self, records: list[Record]) -> tuple[int, BaseException | None]:
        """One `write`: how many records it settled, and the error that stopped it."""
        cause: BaseException | None
        try:
            with self._watch():
                self.backend.write(records)
        except PartialDelivery as partial:
            done, cause = max(0, min(partial.done, len(records))), partial.cause
        except Exception as exc:  # noqa: BLE001 - classified by the caller
            done, cause = 0, exc
        else:
            done, cause = len(records), None
        settled = {r.seq: r for r in records[:done]}
        noted = self.backend.take_rejections()
        if isinstance(cause, RecordRejected) and cause.seq in settled:
            noted.append(cause)  # the backend skipped it itself (PartialDelivery(done + 1))
            cause = None
        for rejection in sorted(noted, key=lambda r: r.seq or 0):
            if rejection.seq in settled:
                self._reject(settled[rejection.seq], rejection)
        if done:
            self._store(records[done - 1].seq)
        return done, cause

    @staticmethod
    def _named_record(cause: BaseException, records: list[Record]) -> int | None:
        seq = cause.seq if isinstance(cause, RecordRejected) else None
        if seq is None:
            return None
        return next((i for i, record in enumerate(records) if record.seq == seq), None)

    def _refused_alone(self, record: Record, cause: BaseException) -> BaseException | None:
        """A record refused on its own: for good if the tracker stored a record of this pass;
        else held until it does, or until MAX_HELD in a row, refused for one same reason,
        show that the tracker refuses everything (the pass ends; nothing is marked)."""
        if self.stored_any:
            self._reject(record, cause)
            return None
        if self._held and _gist(cause) != _gist(self._held[-1][1]):
            self._settle_held()  # refused for different reasons: about the records
        self._held.append((record, cause))
        if len(self._held) >= MAX_HELD:
            return self._refusing_all(cause)
        return None

    def _refusing_all(self, cause: BaseException) -> BaseException:
        """End the pass: the tracker refuses every record it was given (nothing is marked)."""
        self.refused_all = True
        return cause

    def _suspect_alone(self, record: Record, cause: BaseException) -> BaseException | None:
        """A record failing alone with a transient error: try it once more, then write the
        records after it; if one of them is stored, the tracker works and this one is bad."""
        if len(self._suspects) >= MAX_SUSPECTS:  # that many in a row: the tracker is down
            return cause
        done, again = self._attempt([record])
        if again is None or done:
            return None
        if self.backend.classify(again) == PERMANENT:
            self._reject(record, again)
            return None
        self._went_on_after(cause)
        self._suspects.append((record, again))
        return None

    def _went_on_after(self, cause: BaseException) -> None:
        if self._failed is not None:
            self._failed(cause)

    def _settle_suspects(self) -> None:
        """The tracker just stored or judged a later record: the suspects are refused for good."""
        suspects, self._suspects = self._suspects, []
        for record, cause in suspects:
            verdict = RecordRejected(
                f"kept failing while the records after it were delivered: {reason_of(cause)}",
                record.seq,
            )
            verdict.__cause__ = cause
            self._rejected(record, verdict)

    def _settle_held(self, again: bool = False) -> None:
        """Refuse the held records for good; with `again` (the tracker just stored a record
        after them: it may have come back up during the pass), each is tried once more first."""
        held, self._held = self._held, []
        for record, cause in held:
            error = self._write_alone(record) if again else cause
            if error is not None:
                self._rejected(record, error)

    def _write_alone(self, record: Record) -> BaseException | None:
        """One more try of one record, outside the cursor's order (it was not stored yet)."""
        try:
            with self._watch():
                self.backend.write([record])
        except Exception as exc:  # noqa: BLE001 - the verdict is the caller's
            return exc.cause if isinstance(exc, PartialDelivery) and exc.cause else exc
        noted = self.backend.take_rejections()
        return noted[0] if noted else None

    def _store(self, seq: int) -> None:
        self.stored_any = True
        self._settle_held(again=True)
        self._settle_suspects()
        self._stored(seq)

    def _reject(self, record: Record, cause: BaseException) -> None:
        self._settle_held()
        self._settle_suspects()
        self._rejected(record, cause)


def _gist(cause: BaseException) -> str:
    """A refusal's reason without its numbers (request ids, sizes, times): equal for the
    same answer to different records."""
    return re.sub(r"\d+", "#", reason_of(cause))[:300]


BUSY_CPU_SHARE = 0.01
"""Share of wall time a call must spend on CPU to count as working rather than waiting."""


class CallWatch:
    """The backend call in progress on one dispatcher thread, and how long it has stalled.

    A call stalls while its thread uses (almost) no CPU: blocked on a server that accepted
    the connection and never answers, or that drips its answer a byte at a time, or on a
    hung file system. A call that is busy (importing a library, serialising a model) is not
    stalled, however long it takes; nor is one whose `work_clock` grows (a backend's worker
    process computing the answer). Busy means at least :data:`BUSY_CPU_SHARE` of the wall
    time between two looks spent on CPU: reading a dripped byte now and then is not busy.
    Where the platform cannot read another thread's CPU time, a call stalls from its start.
    """

    def __init__(self, work_clock: Callable[[], float | None] = lambda: None) -> None:
        self.started: float | None = None
        self._clock: int | None = None
        self._work_clock = work_clock
        self._cpu = 0.0
        self._busy_at = 0.0
        self._looked_at = 0.0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        """Time one call; used on the dispatcher thread around each backend call."""
        self._clock = _cpu_clock(threading.get_ident())
        self._cpu = self._used() or 0.0
        self._busy_at = self._looked_at = time.monotonic()
        self.started = self._busy_at
        try:
            yield
        finally:
            self.started = None

    def stalled_for(self) -> float:
        """Seconds the call in progress has gone without using CPU (0 when no call runs)."""
        started = self.started
        if started is None:
            return 0.0
        now = time.monotonic()
        cpu = self._used()
        if cpu is not None and now > self._looked_at:
            if cpu - self._cpu >= BUSY_CPU_SHARE * (now - self._looked_at):
                self._busy_at = now
            self._cpu, self._looked_at = cpu, now
        return now - max(started, self._busy_at)

    def _used(self) -> float | None:
        """CPU seconds spent on the call so far: its thread's, plus the backend's work clock."""
        thread = _read_clock(self._clock)
        if thread is None:
            return None
        try:
            elsewhere = self._work_clock()
        except Exception:  # noqa: BLE001 - a broken clock must not break the dispatcher
            elsewhere = None
        return thread + (elsewhere or 0.0)


def _cpu_clock(thread_id: int) -> int | None:
    getter = getattr(time, "pthread_getcpuclockid", None)
    if getter is None:
        return None
    try:
        return int(getter(thread_id))
    except OSError:
        return None


def _read_clock(clock: int | None) -> float | None:
    if clock is None:
        return None
    try:
        return time.clock_gettime(clock)
    except OSError:  # the thread is gone
        return None
