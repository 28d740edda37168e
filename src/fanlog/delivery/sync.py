"""`fanlog sync`: deliver to a tracker what a journal holds and the tracker has not received.

This is the air-gapped workflow (log on a compute node with only the journal, copy the
save dir to a login node, sync) and the repair path after an outage or a ``kill -9``.

Exactly-once rests on the journal's per-backend delivery cursor (the ``delivery``
table): records are sent in seq order, in batches, and the cursor is committed right
after the tracker accepted each batch. Running sync again starts from the cursor, so
nothing is sent twice. SIGINT/SIGTERM during a sync finish the batch in flight and
commit the cursor before stopping. Only a ``kill -9`` that lands between the tracker's
acceptance of a batch and the cursor commit (a few milliseconds per batch) can resend
that one batch; the batch range is kept as an "in flight" marker so the next sync says
so (see docs/sync.md for which trackers store such a resend idempotently).

The cursor used is the run's own entry when the run already had that backend (so sync
continues where live delivery stopped, honouring the run's log_freq mask), else
``sync:<tracker>`` (a tracker the run never used gets every record of a kind it supports).

Records a tracker refused for good (the journal's ``rejected`` table, per cursor) are
skipped and counted; ``retry_rejected`` sends them again first and clears the mark of
each one the tracker now takes. A record the tracker refuses during the sync is marked
the same way, and the records after it are still delivered (see :mod:`fanlog.delivery.dispatch`).

This module is the library side (no click); the ``fanlog sync`` command is in
:mod:`fanlog.cli.sync`. The function is exported as :func:`fanlog.sync`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fanlog.backend import Backend, backend_type
from fanlog.delivery.dispatch import BatchDelivery, Rejected
from fanlog.delivery.follow import CursorBusyError, cursor_lock
from fanlog.errors import BadJournalError, FanlogError, reason_of
from fanlog.journal import Journal, check_journal_file, is_damage, read_meta, unreadable
from fanlog.journal.layout import journal_label, journal_paths, run_id_of
from fanlog.journal.status import end_status, owner_meta, writer_is_live
from fanlog.journal.summary import INFLIGHT_SUFFIX, pending_by_kind
from fanlog.options import BackendContext
from fanlog.record import Record, RunInfo

PROGRESS_THRESHOLD = 2000
"""Syncs with at least this many records show a progress bar."""


class SyncError(FanlogError):
    """A sync could not start (locked, live run, bad options) or the tracker kept failing."""


@dataclass
class JournalSync:
    """What sync did (or would do) for one journal (one rank of one run)."""

    path: str
    cursor: str
    """Name of the delivery entry used."""
    start: int
    """Cursor before the sync: records with a larger seq were candidates."""
    end: int
    """Cursor after the sync."""
    pending: dict[str, int] = field(default_factory=dict)
    """Records to send, by kind (kinds the tracker supports)."""
    unsupported: dict[str, int] = field(default_factory=dict)
    """Records the tracker cannot store, by kind (skipped)."""
    sent: int = 0
    resumed_inflight: tuple[int, int] | None = None
    """(first, last) seq of a batch a previous sync was sending when it died, if any."""
    error: str | None = None
    refused: int = 0
    """Records marked as refused for good by this tracker before the sync."""
    retry_rejected: bool = False
    """Whether the refused records were sent again (``--retry-rejected``)."""
    retried: int = 0
    """Refused records the tracker took this time (their mark is cleared)."""
    rejected: list[tuple[int, str, str, str]] = field(default_factory=list)
    """(seq, kind, key, reason) of the records the tracker refused during this sync."""

    @property
    def total(self) -> int:
        return sum(self.pending.values()) + (self.refused if self.retry_rejected else 0)


@dataclass
class SyncReport:
    """The outcome of :func:`sync`, one :class:`JournalSync` per journal."""

    to: str
    dry_run: bool
    journals: list[JournalSync] = field(default_factory=list)
    interrupted: bool = False

    @property
    def sent(self) -> int:
        return sum(j.sent for j in self.journals)

    @property
    def pending(self) -> int:
        return sum(j.total for j in self.journals)

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(j.error is None for j in self.journals)

    def summary(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        lines = []
        for j in self.journals:
            if not j.cursor:  # not a journal: nothing was read or sent
                lines.append(f"{j.error}; skipped")
                continue
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(j.pending.items())) or "nothing"
            done = j.total if self.dry_run else j.sent
            line = f"{j.path}: {verb} {done} record(s) to {self.to} [{kinds}] (cursor {j.cursor!r}"
            line += f" {j.start} -> {j.end})"
            if j.unsupported:
                skipped = ", ".join(f"{n} {k}" for k, n in sorted(j.unsupported.items()))
                line += f"; {self.to} does not store: {skipped}"
            if j.refused and not j.retry_rejected:
                line += (
                    f"; {j.refused} record(s) {self.to} refused earlier are skipped "
                    "(--retry-rejected sends them again)"
                )
            if j.retried:
                line += f"; {j.retried} record(s) refused earlier were delivered now"
            if j.rejected:
                shown = "; ".join(
                    f"seq {seq} {kind} {key!r}: {reason[:200]}" for seq, kind, key, reason in j.rejected[:3]
                )
                line += (
                    f"; {len(j.rejected)} record(s) refused for good by {self.to}, "
                    f"marked in the journal and skipped: {shown}"
                )
            if j.resumed_inflight:
                line += (
                    f"; a previous sync died while sending seq {j.resumed_inflight[0]}.."
                    f"{j.resumed_inflight[1]}"
                )
            if j.error:
                line += f"; FAILED: {j.error}"
            lines.append(line)
        if self.interrupted:
            lines.append("interrupted: the cursor is saved, run the same command to continue")
        return "\n".join(lines)


def sync(
    path: str | os.PathLike[str],
    to: str,
    dry_run: bool = False,
    progress: bool = True,
    cursor: str | None = None,
    batch_size: int | None = None,
    retries: int = 3,
    force: bool = False,
    retry_rejected: bool = False,
    **tracker_options: Any,
) -> SyncReport:
    """Deliver every record of the journal(s) under `path` that tracker `to` has not received.

    Args:
        path: a journal file, a rank or run directory, or a save dir (every run in it).
        to: a backend name (``mlflow``, ``wandb``, ``tensorboard``, ``azureml``, ...).
        dry_run: only count what would be sent; open no tracker, change nothing.
        progress: show a progress bar (on stderr) for syncs of many records.
        cursor: the delivery entry to use (default: see the module docstring).
        batch_size: records per write (default: the backend's ``max_batch``).
        retries: attempts per batch before giving up on a journal (the cursor is kept).
        force: sync even if the process that writes the journal still runs.
        retry_rejected: send again the records this tracker refused for good earlier (they
            are skipped otherwise); a mark is cleared when the tracker takes the record.
        **tracker_options: options of the tracker's Logger class (``tracking_uri=...``).
    """
    report = SyncReport(to=to, dry_run=dry_run)
    with _graceful_stop() as stop:
        for journal_path in journal_paths(path):
            try:
                check_journal_file(journal_path, thorough=True)  # no sync from or into damage
                result = _sync_one(
                    journal_path,
                    to,
                    dry_run,
                    progress,
                    cursor,
                    batch_size,
                    retries,
                    force,
                    tracker_options,
                    stop,
                    retry_rejected,
                )
            except (BadJournalError, sqlite3.DatabaseError) as exc:
                if isinstance(exc, sqlite3.DatabaseError) and not is_damage(exc):
                    raise
                error = exc if isinstance(exc, BadJournalError) else unreadable(journal_path, exc)
                result = JournalSync(journal_path, "", 0, 0, error=str(error))
            report.journals.append(result)
            if stop.requested:
                report.interrupted = True
                break
    return report


# ---------------------------------------------------------------------------- one journal
def _sync_one(
    journal_path: str,
    to: str,
    dry_run: bool,
    progress: bool,
    cursor: str | None,
    batch_size: int | None,
    retries: int,
    force: bool,
    options: dict[str, Any],
    stop: _Stop,
    retry_rejected: bool = False,
) -> JournalSync:
    backend = make_backend(to, journal_path, options)
    journal = Journal(journal_path, readonly=dry_run)
    try:
        meta = owner_meta(journal_path, journal.meta())
        slots = journal.backends()
        name = cursor or (to if to in slots else f"sync:{to}")
        slot = slots.get(name)
        start = journal.delivered(name)
        result = JournalSync(path=journal_path, cursor=name, start=start, end=start)
        result.pending, result.unsupported = pending_by_kind(
            journal_path, start, slot, backend.supported_kinds
        )
        result.refused = len(journal.rejected(name))
        result.retry_rejected = retry_rejected
        inflight = journal.delivered(name + INFLIGHT_SUFFIX)
        if inflight > start:
            result.resumed_inflight = (start + 1, inflight)
        if dry_run:
            return result
        if not result.total:
            if result.unsupported:  # only kinds this tracker cannot store: skip past them
                journal.set_delivered(name, journal.last_seq)
                result.end = journal.delivered(name)
            return result
        _check_not_live(meta, name, force)
        with _lock(journal.run_dir, name + journal_label(journal_path)):
            result.start = start = journal.delivered(name)  # another sync may have just run
            _deliver(journal, backend, meta, name, slot, result, batch_size, retries, progress, stop)
        return result
    finally:
        journal.close()


def make_backend(to: str, journal_path: str, options: dict[str, Any]) -> Backend:
    """The target backend, built from its declaration (:meth:`Backend.from_options`) in the
    context of the run: its save dir and names, unless `options` give them."""
    cls = backend_type(to)  # an unknown name is a ValueError naming the closest known one
    run_dir = os.path.dirname(os.path.abspath(journal_path))
    try:
        meta = _read_meta(journal_path)
    except Exception:  # noqa: BLE001 - an unreadable journal fails later, with its own error
        meta = {}
    context = BackendContext(
        savedir=os.path.dirname(os.path.dirname(os.path.dirname(run_dir))),
        experiment_name=meta.get("experiment_name"),
        run_name=meta.get("run_name"),
    )
    try:
        return cls.from_options(options, context)
    except (TypeError, ValueError) as exc:
        raise SyncError(f"bad option for --to {to}: {exc}") from exc


def _read_meta(journal_path: str) -> dict[str, Any]:
    """The journal's metadata (kept under this name for make_backend)."""
    return read_meta(journal_path)


def _check_not_live(meta: dict[str, Any], name: str, force: bool) -> None:
    """Refuse to race the live process's own dispatcher on the same cursor."""
    if force or name not in meta.get("backends", []) or meta.get("pid") == os.getpid():
        return
    if writer_is_live(meta):
        raise SyncError(
            f"process {meta.get('pid')} still writes this run and delivers to {name!r} itself; "
            "sync after it ended (or pass --force)"
        )


@contextlib.contextmanager
def _lock(run_dir: str, name: str) -> Iterator[None]:
    """One sync per (journal, cursor) at a time, across processes (a delivery agent too)."""
    try:
        with cursor_lock(run_dir, name):
            yield
    except CursorBusyError as exc:
        raise SyncError(str(exc)) from None


def _run_info(meta: dict[str, Any], journal_path: str) -> RunInfo:
    run_id = str(meta.get("run_id") or run_id_of(journal_path))
    return RunInfo(
        run_id=run_id,
        run_name=str(meta.get("run_name") or run_id),
        rank=int(meta.get("rank", 0)),
        world_size=int(meta.get("world_size", 1)),
        run_dir=os.path.dirname(journal_path),
        experiment_name=meta.get("experiment_name"),
        resumed=True,  # reattach to what an earlier delivery or sync created
    )


def _deliver(
    journal: Journal,
    backend: Backend,
    meta: dict[str, Any],
    name: str,
    slot: int | None,
    result: JournalSync,
    batch_size: int | None,
    retries: int,
    progress: bool,
    stop: _Stop,
) -> None:
    run = _run_info(meta, journal.path)
    backend.prepare()  # a missing tracker library or a bad option: raised, it is the caller's to fix
    try:
        _retry(lambda: backend.open(run), retries)
    except Exception as exc:  # noqa: BLE001 - tracker unreachable: reported, nothing sent
        result.error = f"cannot open the {backend.name} run: {exc!r}"
        return
    limit = max(1, min(batch_size or backend.max_batch, backend.max_batch))
    supported = backend.supported_kinds
    bar = _progress_bar(result.total, f"sync {os.path.basename(journal.run_dir)} → {backend.name}", progress)
    status = end_status(meta)
    refused = {seq for _, seq, *_ in journal.rejected(name)}

    def reject(record: Record, exc: BaseException) -> None:
        journal.reject(name, record.seq, reason_of(exc))
        refused.add(record.seq)
        result.rejected.append((record.seq, record.kind, record.key, reason_of(exc)))

    try:
        with bar:
            if result.retry_rejected and refused:
                _retry_refused(journal, backend, name, sorted(refused), retries, result, reject)
                bar.update(result.refused)
            while not stop.requested:
                cursor = journal.delivered(name)
                page = journal.read(cursor, slot=slot, limit=limit, rank=run.rank)
                if not page:
                    break
                records = [r for r in page if r.kind in supported and r.seq not in refused]
                before = len(result.rejected)
                if records:
                    journal.set_delivered(name + INFLIGHT_SUFFIX, page[-1].seq)
                    _write(backend, records, retries, lambda seq: journal.set_delivered(name, seq), reject)
                    backend.flush()  # stored in the tracker before the cursor says so
                journal.set_delivered(name, page[-1].seq)
                result.sent += len(records) - (len(result.rejected) - before)
                result.end = page[-1].seq
                bar.update(len(records))
            backend.flush()
    except Exception as exc:  # noqa: BLE001 - reported per journal; the cursor is kept
        result.error = repr(exc)
        result.end = journal.delivered(name)
        with contextlib.suppress(Exception):
            backend.close(status)
        return
    backend.close(status)


def _write(
    backend: Backend,
    records: list[Record],
    retries: int,
    settled: Callable[[int], None],
    reject: Rejected,
) -> None:
    """Write `records` in order, retrying transient failures with backoff (the last attempt
    looks for one record the tracker keeps failing on). `settled(seq)` is called, after the
    backend's flush, once every record up to seq is stored or refused; `reject(record, exc)`
    for each record the tracker refuses for good."""
    delay = 0.5
    for attempt in range(retries):
        last = 0

        def stored(seq: int) -> None:
            nonlocal last
            last = max(last, seq)

        def rejected(record: Record, exc: BaseException) -> None:
            nonlocal last
            reject(record, exc)
            last = max(last, record.seq)

        isolate = retries > 1 and attempt == retries - 1
        error = BatchDelivery(backend, stored, rejected, isolate=isolate).run(records)
        if last:
            backend.flush()
            settled(last)
            records = [r for r in records if r.seq > last]
        if error is None:
            return
        if attempt == retries - 1:
            raise error
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def _retry_refused(
    journal: Journal,
    backend: Backend,
    name: str,
    seqs: list[int],
    retries: int,
    result: JournalSync,
    reject: Rejected,
) -> None:
    """Send the records `name` refused earlier again; clear the mark of each one it takes."""
    records = [
        r
        for seq in seqs
        for r in journal.read(seq - 1, upto=seq, limit=1)
        if r.kind in backend.supported_kinds
    ]
    again: set[int] = set()

    def refused_again(record: Record, exc: BaseException) -> None:
        again.add(record.seq)
        reject(record, exc)

    def settled(seq: int) -> None:
        taken = [r.seq for r in records if r.seq <= seq and r.seq not in again]
        journal.unreject(name, taken)
        result.retried += len(taken)
        result.sent += len(taken)
        records[:] = [r for r in records if r.seq > seq]

    _write(backend, list(records), retries, settled, refused_again)


def _retry(call: Any, retries: int) -> None:
    delay = 0.5
    for attempt in range(retries):
        try:
            call()
            return
        except Exception:
            if attempt == retries - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


class _Bar:
    """A progress bar on stderr (rich's; on a terminal it redraws, elsewhere it prints once)."""

    def __init__(self, total: int, label: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(file=sys.stderr),
        )
        self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, n: int) -> None:
        self._progress.advance(self._task, n)


def _progress_bar(total: int, label: str, progress: bool) -> _Bar | _NoBar:
    if not progress or total < PROGRESS_THRESHOLD:
        return _NoBar()
    return _Bar(total, label)


# ---------------------------------------------------------------------------- signals
class _Stop:
    """Set by SIGINT/SIGTERM: the batch in flight completes and its cursor is committed."""

    requested = False


@contextlib.contextmanager
def _graceful_stop() -> Iterator[_Stop]:
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        stop.requested = True

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
