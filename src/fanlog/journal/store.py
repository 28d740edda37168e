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
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

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
from fanlog.journal.rows import (
    BATCH_IDX,
    KEY,
    KIND,
    MASK,
    NUM,
    SEQ,
    STEP,
    TIME,
    Pending,
    Row,
    SetAside,
    escaped_row,
    insert_rows,
    options_json,
    safe_repr,
    storable_text,
)
from fanlog.journal.schema import NewerJournalError
from fanlog.kinds import registry as kinds_registry
from fanlog.record import Record
from fanlog.secrets import scrub_text

if TYPE_CHECKING:
    from fanlog.kinds import Kind

log = logging.getLogger("fanlog")

_UNSTORED_COLUMNS = "seq, kind, key, step, batch_idx, time, reason, num, payload, options"

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
                raise BadJournalError(
                    path, f"{exc.reason}; move it away (or delete it) to log this run and rank here"
                ) from exc
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

    _conn: sqlite3.Connection
    _lock: threading.Lock

    def __init__(self, path: str, readonly: bool = False, lock: writer_lock.WriterLock | None = None) -> None:
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

    def register_backend(
        self, name: str, kinds: Iterable[str], options: dict[str, Any], slot: int | None = None
    ) -> int:
        """The slot (bit index) of backend `name` in this journal; kept across restarts.

        `slot` asks for a given slot (a forked child's journal keeps its parent's bits).
        """
        with self._lock, self._conn:
            row = self._conn.execute("SELECT slot FROM backends WHERE name = ?", (name,)).fetchone()
            if row is not None:
                return int(row[0])
            if slot is None:
                slot = self._conn.execute("SELECT COALESCE(MAX(slot) + 1, 0) FROM backends").fetchone()[0]
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
    def encode(
        self,
        pending: Sequence[Pending],
        first_seq: int,
        on_error: Any = None,
        aside: list[SetAside] | None = None,
    ) -> list[Row]:
        """Rows for `pending`, numbered from `first_seq` without gaps. Runs on the writer thread.

        A float of a kind stored as a plain number, without options (nearly every record),
        becomes its row with no other work. Anything else goes through its kind's codec; a
        record that fails there (its value, its options, its kind) is reported through
        `on_error(exc, key)` and, with `aside`, listed there to be set aside by `insert()`.
        """
        plain = self._plain_kinds(pending)
        rows: list[Row] = []
        append = rows.append
        seq = first_seq
        for record in pending:
            kind, key, value, step, batch_idx, epoch, when, mask, options = record
            if kind in plain and type(value) is float and value == value and options is None:
                append((seq, kind, key, step, batch_idx, epoch, when, mask, value, None, None))
                seq += 1
                continue
            try:
                append(self._encode_one(record, seq))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - a kind's own code may raise anything
                reason = safe_repr(exc)
                if aside is not None:
                    aside.append(SetAside(None, kind_name(kind), key, step, batch_idx, when, reason))
                if on_error is not None:
                    on_error(exc, key)
                continue
            seq += 1
        return rows

    def _plain_kinds(self, pending: Sequence[Pending]) -> set[str]:
        """Names, among the kinds in `pending`, of those whose float values are stored as they
        are (storage ``num``, no finalize, already noted in this journal)."""
        plain = set()
        for name in set(map(itemgetter(0), pending)):
            kind = kinds_registry._REGISTRY.get(name) if type(name) is str else None
            if (
                kind is not None
                and kind.storage == "num"
                and kind.finalize is None
                and self._storages.get(name) == "num"
            ):
                plain.add(name)
        return plain

    def _encode_one(self, record: Pending, seq: int) -> Row:
        """The row of one record, through its kind's codec (raises when it cannot be encoded)."""
        name, key, value, step, batch_idx, epoch, when, mask, options = record
        kind = name if isinstance(name, kinds_registry.Kind) else kinds_registry.get_kind(name)
        if self._storages.get(kind.name) != kind.storage:
            self._record_kind(kind)
        num, payload = encode_value(kind, value, self.run_dir, seq, key, self.files)
        if options is not None and not isinstance(options, str):  # log() gives JSON text already
            options = options_json(options)
        return (seq, kind.name, key, step, batch_idx, epoch, when, mask, num, payload, options)

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

    def insert(
        self,
        rows: list[Row],
        aside: list[SetAside] | None = None,
        on_error: Callable[[BaseException, str], None] | None = None,
        on_escaped: Callable[[str, str], None] | None = None,
    ) -> None:
        """Insert encoded rows in one transaction, setting aside the rows SQLite refuses.

        Raises (inserting nothing) only on an outage of the file: disk full, read-only, I/O.
        A row that fails on its own (out of range, wrong type, a constraint) is found by
        bisection, stored in ``unstored`` with the reason, and reported via `on_error`. A row
        whose kind or key SQLite cannot store as text (a lone surrogate) is stored with it
        escaped (:func:`~fanlog.journal.rows.storable_text`), reported via
        `on_escaped(original, stored)`.
        """
        if not rows and not aside:
            return
        refused: list[tuple[BaseException, str]] = []
        escaped: list[tuple[str, str]] = []
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                if self._unrecorded:  # in the rows' transaction: no row without its kind's form
                    self._conn.executemany(
                        "INSERT OR IGNORE INTO kinds (name, storage) VALUES (?, ?)", self._unrecorded
                    )
                self._insert_isolating(rows, refused, escaped)
                for entry in aside or ():
                    self._set_aside(entry)
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
            self._unrecorded.clear()
        if rows:
            self.last_seq = max(self.last_seq, rows[-1][SEQ])
        for exc, key in refused:
            if on_error is not None:
                on_error(exc, key)
        for original, stored in escaped:
            if on_escaped is not None:
                on_escaped(original, stored)

    def _insert_isolating(
        self, rows: list[Row], refused: list[tuple[BaseException, str]], escaped: list[tuple[str, str]]
    ) -> None:
        """Insert `rows` inside the open transaction; bisect around rows SQLite refuses."""
        if not rows:
            return
        self._conn.execute("SAVEPOINT rows")
        try:
            insert_rows(self._conn, rows)
        except (sqlite3.Error, OverflowError, ValueError, TypeError) as exc:
            self._conn.execute("ROLLBACK TO rows")
            self._conn.execute("RELEASE rows")
            if is_outage(exc):
                raise
            if len(rows) == 1:
                self._insert_alone(rows[0], exc, refused, escaped)
                return
            middle = len(rows) // 2
            self._insert_isolating(rows[:middle], refused, escaped)
            self._insert_isolating(rows[middle:], refused, escaped)
            return
        self._conn.execute("RELEASE rows")

    def _insert_alone(
        self,
        row: Row,
        exc: BaseException,
        refused: list[tuple[BaseException, str]],
        escaped: list[tuple[str, str]],
    ) -> None:
        """The one row SQLite refused with `exc`: stored with its text escaped when that is
        what it could not take, else set aside."""
        fixed = escaped_row(row)
        if fixed is not None:
            try:
                insert_rows(self._conn, [fixed])
            except (sqlite3.Error, OverflowError, ValueError, TypeError) as again:
                if is_outage(again):
                    raise
                exc, row = again, fixed
            else:
                escaped.append((row[KEY], fixed[KEY]))
                return
        self._set_aside(
            SetAside(row, row[KIND], row[KEY], row[STEP], row[BATCH_IDX], row[TIME], safe_repr(exc))
        )
        refused.append((exc, row[KEY]))

    def _set_aside(self, entry: SetAside) -> None:
        """Store what is known of a record that could not be stored (its value if possible).

        Fails only on an outage of the file: text SQLite cannot take is escaped, and a value
        it cannot take is left out."""
        row, kind, key, step, batch_idx, when, reason = entry
        seq, num, payload, options = (row[SEQ], *row[NUM:]) if row else (None,) * 4
        described = (
            storable_text(kind),
            storable_text(key),
            storable_text(safe_repr(step)),
            storable_text(safe_repr(batch_idx)),
            _float_or_none(when),
            storable_text(scrub_text(reason)),
        )  # an error may quote a URI with its credentials
        query = f"INSERT INTO unstored ({_UNSTORED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        try:
            self._conn.execute(query, (seq, *described, num, payload, options))
        except (sqlite3.Error, OverflowError, ValueError, TypeError) as exc:
            if is_outage(exc):
                raise
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
        return self._record((*row[:MASK], *row[NUM:]), rank)

    # ----------------------------------------------------------------- reading
    def read(
        self,
        after: int,
        upto: int | None = None,
        slot: int | None = None,
        limit: int = 1000,
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
            seq=seq,
            kind=kind,
            key=key,
            value=value,
            step=step,
            time=when,
            rank=rank,
            batch_idx=batch_idx,
            epoch=epoch,
            options=json.loads(options) if options else {},
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
            self._conn.executemany(
                "DELETE FROM rejected WHERE name = ? AND seq = ?", [(name, seq) for seq in seqs]
            )

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

    # ----------------------------------------------------------------- the delivery agent
    def committed(self) -> int:
        """The highest seq committed by the writer, as this connection sees it now (a reader
        following a live journal; the writer's own count is `last_seq`)."""
        with self._lock:
            return int(self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0])

    def cursors(self) -> dict[str, int]:
        """Every delivery cursor: name → the last seq it has."""
        with self._lock:
            return {name: int(seq) for name, seq in self._conn.execute("SELECT name, seq FROM delivery")}

    def set_health(self, name: str, state: str, **fields: Any) -> None:
        """Record how delivery to `name` goes (the ``health`` table; the delivery agent writes
        it). `fields` are among :data:`HEALTH_FIELDS`; those not given keep their value."""
        unknown = set(fields) - set(HEALTH_FIELDS[1:])
        if unknown:
            raise ValueError(f"unknown health field(s) {sorted(unknown)}; known: {HEALTH_FIELDS[1:]}")
        if fields.get("error"):
            fields["error"] = scrub_text(str(fields["error"]))[:500]
        if "info" in fields:
            fields["info"] = json.dumps(fields["info"], default=str)
        columns = ["name", "state", "updated", *fields]
        values = [name, state, time.time(), *fields.values()]
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        with self._lock, self._conn:
            self._conn.execute(
                f"INSERT INTO health ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                f"ON CONFLICT(name) DO UPDATE SET {updates}",
                values,
            )

    def health(self) -> dict[str, dict[str, Any]]:
        """name → its ``health`` row (state, failing_since, stalled_since, error, info, pid,
        updated); {} for a journal no agent served."""
        names = ("state", *HEALTH_FIELDS[1:], "updated")
        with self._lock:
            if not schema.has_table(self._conn, "health"):
                return {}
            rows = self._conn.execute(f"SELECT name, {', '.join(names)} FROM health").fetchall()
        found = {}
        for name, *values in rows:
            row = dict(zip(names, values, strict=True))
            row["info"] = json.loads(row["info"]) if row["info"] else {}
            found[name] = row
        return found


HEALTH_FIELDS = ("state", "failing_since", "stalled_since", "error", "info", "pid")
"""Columns of the ``health`` table besides its name and the time it was updated."""


def kind_name(kind: Any) -> str:
    """The name of a record's kind: records carry it as a str, code outside log() may pass
    the Kind itself."""
    return kind.name if isinstance(kind, kinds_registry.Kind) else storable_text(kind)


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except Exception:  # noqa: BLE001 - whatever a caller's object raises, the time is unknown
        return None


def live_journals() -> list[Journal]:
    """Every journal open in this process (for the fork hooks)."""
    return list(_live)


def forget_after_fork() -> None:
    """In a forked child: the parent's journals are not this process's to use or share."""
    _exclusive.clear()
    _live.clear()
