"""The journal file: a per-run, per-rank SQLite database in WAL mode, and its one writer.

Every accepted record is appended here before any backend sees it; backends are
then fed from the journal, each from its own delivery cursor. That is what makes
"nothing lost" true: a tracker that is down, slow or added later (``fanlog sync``)
reads what it missed from the same table.

A journal has exactly one writer (appending records), enforced by a lock
(:mod:`fanlog.journal.lock`); a second writer of the same rank gets a sibling journal
(:mod:`fanlog.journal.layout`). Delivery cursors are another matter: dispatchers,
``fanlog sync`` and other processes update the ``delivery`` table through SQLite's own locking.

A row that cannot be stored (its value fails to encode, or SQLite refuses it) is set
aside in the ``unstored`` table with its reason, and the rest of its batch is written.
Only errors of the file itself (disk full, read-only, I/O) are an outage of the journal.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from fanlog import kinds as kinds_registry
from fanlog.errors import BadJournalError
from fanlog.journal import lock as writer_lock
from fanlog.journal import schema
from fanlog.journal.codec import decode_value, encode_value
from fanlog.journal.connection import (
    JournalBusyError,
    check_journal_file,
    connect,
    is_blank,
    is_damage,
    is_outage,
    size,
    unreadable,
)
from fanlog.journal.fsinfo import is_network, journal_fs_type
from fanlog.journal.layout import files_name, journal_file, make_private_dirs
from fanlog.journal.schema import NewerJournalError
from fanlog.record import Record
from fanlog.secrets import scrub_text

if TYPE_CHECKING:
    from fanlog.kinds import Kind

log = logging.getLogger("fanlog")

_INSERT = ("INSERT INTO records (seq, kind, key, step, batch_idx, epoch, time, mask, num, payload,"
           " options) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class Pending(NamedTuple):
    """A record as `log()` hands it over on the caller's thread, before it has a seq.

    The hot path builds it as a plain tuple in this field order (constructing the named
    type costs about 0.25 µs more per call); everything downstream unpacks it by position.
    """

    kind: Kind
    key: str
    value: Any
    step: int
    batch_idx: int | None
    epoch: int | None
    time: float
    mask: int
    """One bit per tracker slot that the gate let through."""
    options: dict[str, Any] | None


class Row(NamedTuple):
    """An encoded record: the columns of the ``records`` table, in order."""

    seq: int
    kind: str
    key: str
    step: int
    batch_idx: int | None
    epoch: int | None
    time: float
    mask: int
    num: float | None
    payload: Any
    options: str | None
    """The record's options as JSON text."""


class SetAside(NamedTuple):
    """A record that could not be stored: what is known of it, and why (the ``unstored`` table)."""

    row: Row | None
    """The encoded row when SQLite refused it; None when its value failed to encode."""
    kind: str
    key: str
    step: Any
    batch_idx: Any
    time: Any
    reason: str


_open_lock = threading.RLock()
"""Held while a connection opens or closes; taken (with every journal's lock) before a fork,
so that a forked child never inherits SQLite in the middle of a call. Re-entrant: a SIGTERM
handler may close journals while the thread it interrupted opens one."""
_live: weakref.WeakSet[Journal] = weakref.WeakSet()
_exclusive: dict[str, Journal] = {}
"""Writers in locking_mode=EXCLUSIVE, by real path: in-process readers share their connection."""


def open_writer(rank_dir: str) -> Journal:
    """The journal this process appends to in `rank_dir`: the first one no live writer holds.

    ``journal.sqlite`` if it is free (a resume continues it), else ``journal.2.sqlite``, ...
    On a network file system the journal is opened in exclusive mode (see fsinfo). A journal
    from a newer fanlog is refused (:class:`~fanlog.journal.schema.NewerJournalError`), never
    written to.
    """
    mode = "exclusive" if is_network(journal_fs_type(rank_dir)) else "wal"
    number = 1
    while True:
        path = journal_file(rank_dir, number)
        try:
            make_private_dirs(rank_dir)
            lock = writer_lock.try_acquire(path, mode)
        except OSError as exc:  # disk full, read-only, not a directory, ...
            raise OSError(f"fanlog: cannot create the journal {path!r}: {exc}") from exc
        if lock is not None:
            try:
                return Journal(path, lock=lock)
            except NewerJournalError:
                lock.release()
                raise
            except BadJournalError as exc:
                lock.release()
                raise BadJournalError(path, f"{exc.reason}; move it away (or delete it) to log "
                                            "this run and rank here") from exc  # fmt: skip
            except BaseException:
                lock.release()
                raise
        number += 1


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of `path`, None when it does not exist."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class Journal:
    """One journal file. The writer thread appends; dispatcher threads read and record delivery.

    A writer (opened by :func:`open_writer`) holds the journal's writer lock until `close()`.
    Any other instance only reads, and writes delivery cursors.
    """

    def __init__(
        self, path: str, readonly: bool = False, lock: writer_lock.WriterLock | None = None
    ) -> None:
        self.path = os.path.abspath(path)
        self.run_dir = os.path.dirname(self.path)
        self.files = files_name(self.path)
        """This journal's files area, relative to `run_dir` (``files``, ``files.2``, ...)."""
        self.lock = lock
        self.existed = os.path.exists(self.path)
        self.exclusive = lock is not None and lock.mode == "exclusive"
        self.wal_lost: str | None = None
        """Set when the writer found its -wal file deleted or replaced (see check_wal)."""
        self.file_lost: str | None = None
        """Set when the writer found the journal file itself deleted or replaced (check_wal)."""
        self._file_id: tuple[int, int] | None = None
        self._wal_id: tuple[int, int] | None = None
        self._owns_connection = True
        shared = None if lock is not None else _exclusive.get(os.path.realpath(self.path))
        if shared is not None:  # the writer holds the file exclusively: use its connection
            self._conn, self._lock, self._owns_connection = shared._conn, shared._lock, False
        else:
            if readonly or (size(self.path) > 0 and not is_blank(self.path)):
                check_journal_file(self.path)  # never add tables to a file that is not a journal,
                # nor to one from a newer fanlog; a blank one is a journal whose creation stopped
            self._lock = threading.Lock()  # one connection per Journal; threads take turns
            self._open(readonly)
        try:
            with self._lock:
                row = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()
        except sqlite3.DatabaseError as exc:  # damaged beyond its first pages
            if self._owns_connection:
                self._conn.close()
            raise unreadable(self.path, exc) from exc
        self.last_seq: int = row[0]
        """Highest committed seq (updated by the writer after each commit)."""
        with self._lock:
            self._storages = schema.recorded_kinds(self._conn)
        """Storage form per kind as the file records it (a writer adds those it is about to record)."""
        self._unrecorded: list[tuple[str, str]] = []
        """(kind, storage) pairs the writer encoded and has not committed to ``kinds`` yet."""
        self._fallback: dict[str, str] = {}
        """Storage forms of kinds this file does not record (written by fanlog before schema 2)."""
        if lock is not None:
            self._wal_id = self._wal_identity()
            self._file_id = _identity(self.path)
            if self.exclusive:
                _exclusive[os.path.realpath(self.path)] = self

    def _open(self, readonly: bool) -> None:
        try:
            with _open_lock:
                if not readonly:
                    make_private_dirs(self.run_dir)
                self._conn = connect(self.path, readonly=readonly, exclusive=self.exclusive)
                if not readonly:
                    schema.create(self._conn, self.path)
                    os.chmod(self.path, 0o600)
                _live.add(self)
        except JournalBusyError:
            raise
        except (OSError, sqlite3.Error) as exc:  # disk full, read-only, not a directory, ...
            if isinstance(exc, sqlite3.Error) and (readonly or is_damage(exc)):
                raise unreadable(self.path, exc) from exc
            what = "open" if readonly else "create or open"
            raise OSError(f"fanlog: cannot {what} the journal {self.path!r}: {exc}") from exc

    # ----------------------------------------------------------------- metadata
    def set_meta(self, values: dict[str, Any]) -> None:
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    def meta(self) -> dict[str, Any]:
        with self._lock:
            return schema.read_meta(self._conn)

    def register_backend(self, name: str, kinds: Iterable[str], options: dict[str, Any],
                         slot: int | None = None) -> int:
        """The slot (bit index) of backend `name` in this journal; kept across restarts.

        `slot` asks for a given slot (a forked child's journal keeps its parent's bits).
        """
        with self._lock, self._conn:
            row = self._conn.execute("SELECT slot FROM backends WHERE name = ?", (name,)).fetchone()
            if row is not None:
                return int(row[0])
            if slot is None:
                slot = self._conn.execute(
                    "SELECT COALESCE(MAX(slot) + 1, 0) FROM backends").fetchone()[0]
            if slot >= 62:
                raise ValueError("a journal holds at most 62 backends")
            self._conn.execute(
                "INSERT INTO backends (slot, name, kinds, options) VALUES (?, ?, ?, ?)",
                (slot, name, json.dumps(sorted(kinds)), json.dumps(options, default=str)),
            )
            return int(slot)

    def backends(self) -> dict[str, int]:
        with self._lock:
            return dict(self._conn.execute("SELECT name, slot FROM backends").fetchall())

    # ----------------------------------------------------------------- writing
    def encode(self, pending: list[Pending], first_seq: int, on_error: Any = None,
               aside: list[SetAside] | None = None) -> list[Row]:
        """Rows for `pending`, numbered from `first_seq` without gaps. Runs on the writer thread.

        A value that fails to encode is reported through `on_error(exc, key)` and, with
        `aside`, listed there to be set aside by `insert()`.
        """
        rows: list[Row] = []
        storages = self._storages
        seq = first_seq - 1
        for kind, key, value, step, batch_idx, epoch, when, mask, options in pending:
            seq += 1
            try:
                if storages.get(kind.name) != kind.storage:
                    self._record_kind(kind)
                num, payload = encode_value(kind, value, self.run_dir, seq, key, self.files)
            except Exception as exc:  # noqa: BLE001 - reported, never raised into the writer
                seq -= 1
                if aside is not None:
                    aside.append(SetAside(None, kind.name, key, step, batch_idx, when, repr(exc)))
                if on_error is not None:
                    on_error(exc, key)
                continue
            rows.append(
                Row(seq, kind.name, key, step, batch_idx, epoch, when, mask, num, payload,
                    json.dumps(options, default=str) if options else None)
            )
        return rows

    def _record_kind(self, kind: Kind) -> None:
        """Note a kind's storage form, to be written to ``kinds`` with the next commit.

        Raises ValueError when this journal already stores the kind in another form (a
        kind registered differently in a resumed run): its rows could not be read back.
        """
        recorded = self._storages.get(kind.name)
        if recorded is not None:
            raise ValueError(
                f"kind {kind.name!r} is stored as {recorded!r} in the journal {self.path!r}, but "
                f"the kind registered now stores {kind.storage!r}; register it as it was when "
                "the run started, or log it to a new run"
            )
        self._storages[kind.name] = kind.storage
        self._unrecorded.append((kind.name, kind.storage))

    def insert(self, rows: list[Row], aside: list[SetAside] | None = None,
               on_error: Callable[[BaseException, str], None] | None = None) -> None:
        """Insert encoded rows in one transaction, setting aside the rows SQLite refuses.

        Raises (inserting nothing) only on an outage of the file: disk full, read-only, I/O.
        A row that fails on its own (out of range, wrong type, a constraint) is found by
        bisection, stored in ``unstored`` with the reason, and reported via `on_error`.
        """
        if not rows and not aside:
            return
        refused: list[tuple[BaseException, str]] = []
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                if self._unrecorded:  # in the rows' transaction: no row without its kind's form
                    self._conn.executemany("INSERT OR IGNORE INTO kinds (name, storage) VALUES (?, ?)",
                                           self._unrecorded)  # fmt: skip
                self._insert_isolating(rows, refused)
                for entry in aside or ():
                    self._set_aside(entry)
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
            self._unrecorded.clear()
        if rows:
            self.last_seq = max(self.last_seq, rows[-1].seq)
        for exc, key in refused:
            if on_error is not None:
                on_error(exc, key)

    def _insert_isolating(self, rows: list[Row], refused: list[tuple[BaseException, str]]) -> None:
        """Insert `rows` inside the open transaction; bisect around rows SQLite refuses."""
        if not rows:
            return
        self._conn.execute("SAVEPOINT rows")
        try:
            self._conn.executemany(_INSERT, rows)
        except (sqlite3.Error, OverflowError, ValueError, TypeError) as exc:
            self._conn.execute("ROLLBACK TO rows")
            self._conn.execute("RELEASE rows")
            if is_outage(exc):
                raise
            if len(rows) == 1:
                row = rows[0]
                self._set_aside(SetAside(row, row.kind, row.key, row.step, row.batch_idx, row.time,
                                         repr(exc)))
                refused.append((exc, row.key))
                return
            middle = len(rows) // 2
            self._insert_isolating(rows[:middle], refused)
            self._insert_isolating(rows[middle:], refused)
            return
        self._conn.execute("RELEASE rows")

    def _set_aside(self, entry: SetAside) -> None:
        """Store what is known of a record that could not be stored (its value if possible)."""
        row, kind, key, step, batch_idx, when, reason = entry
        seq, num, payload, options = (row.seq, row.num, row.payload, row.options) if row else (None,) * 4
        described = (kind, str(key), repr(step), repr(batch_idx), _float_or_none(when),
                     scrub_text(reason))  # an error may quote a URI with its credentials
        query = ("INSERT INTO unstored (seq, kind, key, step, batch_idx, time, reason, num, payload,"
                 " options) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        try:
            self._conn.execute(query, (seq, *described, num, payload, options))
        except (sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError, ValueError,
                TypeError):  # the value itself cannot be stored: keep what describes it
            self._conn.execute(query, (None, *described, None, None, None))

    def unstored(self) -> list[dict[str, Any]]:
        """Records set aside because they could not be stored, with the reason."""
        with self._lock:
            if not schema.has_table(self._conn, "unstored"):
                return []
            rows = self._conn.execute(
                "SELECT seq, kind, key, step, batch_idx, time, reason FROM unstored ORDER BY rowid"
            ).fetchall()
        names = ("seq", "kind", "key", "step", "batch_idx", "time", "reason")
        return [dict(zip(names, row, strict=True)) for row in rows]

    # ----------------------------------------------------------------- damage
    def _wal_identity(self) -> tuple[int, int] | None:
        return _identity(self.path + "-wal")

    def check_wal(self) -> str | None:
        """A message, once each, if the journal file or its -wal file was deleted or replaced
        while the writer writes (a cleanup script, a user's ``rm``).

        A lost -wal file: the records stay in the file the writer still holds open and reach
        the database at the final checkpoint; meanwhile other connections see an empty or
        broken journal. A lost journal file: what the writer writes goes into a file that no
        longer has a name, and is gone when the run closes.
        """
        if self.lock is None:
            return None
        if self.file_lost is None and self._file_id is not None:
            current = _identity(self.path)
            if current != self._file_id:
                what = "deleted" if current is None else "replaced"
                self.file_lost = (
                    f"the journal file {self.path!r} was {what} while the run was live; fanlog "
                    "still writes into the file it holds open, which has no name any more and "
                    "is gone when the run ends: the records are kept only by the trackers "
                    "that received them, and flush() and destroy return False"
                )
                return self.file_lost
        if self.wal_lost is not None or self.file_lost is not None:
            return None
        current = self._wal_identity()
        if self._wal_id is None:
            self._wal_id = current
            return None
        if current == self._wal_id:
            return None
        what = "deleted" if current is None else "replaced"
        self.wal_lost = (
            f"the journal's write-ahead log {self.path + '-wal'!r} was {what} while the run was "
            "live; records written since its last checkpoint are only in the file fanlog still "
            "holds open, and other readers cannot see them"
        )
        return self.wal_lost

    def row_record(self, row: Row, rank: int = 0) -> Record:
        """The Record a backend receives for an encoded row that is not (yet) in the journal."""
        return self._record((row.seq, row.kind, row.key, row.step, row.batch_idx, row.epoch,
                             row.time, row.num, row.payload, row.options), rank)

    # ----------------------------------------------------------------- reading
    def read(
        self, after: int, upto: int | None = None, slot: int | None = None, limit: int = 1000,
        rank: int = 0,
    ) -> list[Record]:
        """Records with seq in (after, upto], for backend `slot` (None: all), oldest first."""
        query = (
            "SELECT seq, kind, key, step, batch_idx, epoch, time, num, payload, options "
            "FROM records WHERE seq > ?"
        )
        params: list[Any] = [after]
        if upto is not None:
            query += " AND seq <= ?"
            params.append(upto)
        if slot is not None:
            query += " AND (mask & ?) != 0"
            params.append(1 << slot)
        query += " ORDER BY seq LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._conn.execute(query, params).fetchall()
        return [self._record(row, rank) for row in rows]

    def iter_records(self, kinds: Iterable[str] | None = None, rank: int = 0) -> Iterator[Record]:
        """Every record (optionally of some kinds), in seq order, in pages."""
        wanted = set(kinds) if kinds is not None else None
        after = 0
        while True:
            page = self.read(after, limit=5000, rank=rank)
            if not page:
                return
            after = page[-1].seq
            yield from (r for r in page if wanted is None or r.kind in wanted)

    def _storage_of(self, kind: str) -> str:
        """How rows of `kind` are stored: as the journal records it, else (a journal of schema 1)
        as the kind registered in this process stores it, else JSON."""
        storage = self._storages.get(kind) or self._fallback.get(kind)
        if storage is not None:
            return storage
        with self._lock:  # a kind the writer recorded after this reader opened the file
            self._storages.update(schema.recorded_kinds(self._conn))
        storage = self._storages.get(kind)
        if storage is None:
            try:
                storage = kinds_registry.get_kind(kind).storage
            except ValueError:
                storage = "json"
            self._fallback[kind] = storage
        return storage

    def _record(self, row: tuple[Any, ...], rank: int) -> Record:
        seq, kind, key, step, batch_idx, epoch, when, num, payload, options = row
        value = decode_value(self._storage_of(kind), num, payload, self.run_dir)
        return Record(
            seq=seq, kind=kind, key=key, value=value, step=step, time=when, rank=rank,
            batch_idx=batch_idx, epoch=epoch, options=json.loads(options) if options else {},
        )

    def next_steps(self) -> dict[str, int]:
        """Per key, one past the highest step stored: where automatic steps resume."""
        with self._lock:
            rows = self._conn.execute("SELECT key, MAX(step) FROM records GROUP BY key").fetchall()
        return {key: int(step) + 1 for key, step in rows}

    def count(self) -> int:
        """Records in the journal (the pipeline's check after a lost -wal file)."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    # ----------------------------------------------------------------- delivery
    def delivered(self, name: str) -> int:
        with self._lock:
            row = self._conn.execute("SELECT seq FROM delivery WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set_delivered(self, name: str, seq: int, error: str | None = None) -> None:
        error = scrub_text(error) if error else error  # a tracker's message may quote its URI
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO delivery (name, seq, updated, error) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET seq = MAX(seq, excluded.seq), "
                "updated = excluded.updated, error = excluded.error",
                (name, seq, time.time(), error),
            )

    def close(self) -> None:
        """Close the connection (and, for a writer, release the writer lock)."""
        if self._owns_connection:
            with _open_lock, self._lock:
                _exclusive.pop(os.path.realpath(self.path), None)
                self._conn.close()
        if self.lock is not None:
            self.lock.release()


    # ----------------------------------------------------------------- refused records
    def reject(self, name: str, seq: int, reason: str) -> None:
        """Mark record `seq` as refused for good by delivery entry `name`, with the reason."""
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO rejected (name, seq, reason, time) VALUES (?, ?, ?, ?)",
                (name, seq, scrub_text(reason), time.time()),  # a server may echo credentials
            )

    def unreject(self, name: str, seqs: Iterable[int]) -> None:
        """Clear the marks of records that `name` has now stored."""
        with self._lock, self._conn:
            self._conn.executemany("DELETE FROM rejected WHERE name = ? AND seq = ?",
                                   [(name, seq) for seq in seqs])  # fmt: skip

    def rejected(self, name: str | None = None) -> list[tuple[str, int, str, str, str, float]]:
        """(name, seq, kind, key, reason, time) of refused records, by seq; [] for journals
        written before the table existed."""
        query = (
            "SELECT j.name, j.seq, r.kind, r.key, j.reason, j.time FROM rejected j "
            "JOIN records r ON r.seq = j.seq"
        )
        params: tuple[Any, ...] = ()
        if name is not None:
            query += " WHERE j.name = ?"
            params = (name,)
        try:
            with self._lock:
                return self._conn.execute(query + " ORDER BY j.seq, j.name", params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def live_journals() -> list[Journal]:
    """Every journal open in this process (for the fork hooks)."""
    return list(_live)


def forget_after_fork() -> None:
    """In a forked child: the parent's journals are not this process's to use or share."""
    _exclusive.clear()
    _live.clear()
