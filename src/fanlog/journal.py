"""The local journal: a per-run, per-rank SQLite database in WAL mode.

Every accepted record is appended here before any backend sees it; backends are
then fed from the journal, each from its own delivery cursor. That is what makes
"nothing lost" true: a tracker that is down, slow or added later (``fanlog sync``)
reads what it missed from the same table.

A journal has exactly one writer (appending records), enforced by a lock
(:mod:`fanlog.writer_lock`); a second writer of the same rank gets a sibling journal
(:mod:`fanlog.layout`). Delivery cursors are another matter: dispatchers, ``fanlog sync``
and other processes update the ``delivery`` table through SQLite's own locking.

A row that cannot be stored (its value fails to encode, or SQLite refuses it) is set
aside in the ``unstored`` table with its reason, and the rest of its batch is written.
Only errors of the file itself (disk full, read-only, I/O) are an outage of the journal.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from fanlog import writer_lock
from fanlog.capture import Captured, CaptureFailed, place
from fanlog.errors import BadJournalError
from fanlog.fsinfo import is_network, journal_fs_type
from fanlog.kinds import Kind, get_kind
from fanlog.layout import FILES_DIR, JOURNAL_NAME, files_name, journal_file
from fanlog.record import Record
from fanlog.secrets import scrub_text
from fanlog.tensors import Deferred

log = logging.getLogger("fanlog")

__all__ = ["FILES_DIR", "JOURNAL_NAME", "Journal", "JournalBusyError", "connect", "open_writer"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS backends (
    slot INTEGER PRIMARY KEY, name TEXT UNIQUE, kinds TEXT, options TEXT);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, step INTEGER NOT NULL,
    batch_idx INTEGER, epoch INTEGER, time REAL NOT NULL, mask INTEGER NOT NULL,
    num REAL, payload BLOB, options TEXT);
CREATE INDEX IF NOT EXISTS records_key ON records (key, seq);
CREATE TABLE IF NOT EXISTS delivery (
    name TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated REAL, error TEXT);
CREATE TABLE IF NOT EXISTS rejected (
    name TEXT NOT NULL, seq INTEGER NOT NULL, reason TEXT, time REAL, PRIMARY KEY (name, seq));
CREATE TABLE IF NOT EXISTS unstored (
    seq INTEGER, kind TEXT, key TEXT, step TEXT, batch_idx TEXT, time REAL, reason TEXT,
    num REAL, payload BLOB, options TEXT);
"""
_INSERT = ("INSERT INTO records (seq, kind, key, step, batch_idx, epoch, time, mask, num, payload,"
           " options) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_OUTAGES = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_BUSY",
            "SQLITE_LOCKED", "SQLITE_NOMEM", "SQLITE_PROTOCOL", "SQLITE_CORRUPT", "SQLITE_NOTADB",
            "SQLITE_PERM")
_OUTAGE_WORDS = ("disk is full", "readonly", "read-only", "disk i/o", "unable to open", "locked",
                 "malformed", "not a database", "out of memory", "closed database")

ALL_BACKENDS = -1
"""A mask bit pattern meaning "every backend" (used for records written by sync tools)."""

# A pending record as built on the caller's thread: cheap to create, turned into a row here.
Pending = tuple  # (kind: Kind, key, value, step, batch_idx, epoch, time, mask, options|None)
# An encoded row: (seq, kind name, key, step, batch_idx, epoch, time, mask, num, payload, options).
Row = tuple
# A record that could not be stored: (row or None, kind name, key, step, batch_idx, time, reason).
SetAside = tuple

_open_lock = threading.RLock()
"""Held while a connection opens or closes; taken (with every journal's lock) before a fork,
so that a forked child never inherits SQLite in the middle of a call. Re-entrant: a SIGTERM
handler may close journals while the thread it interrupted opens one."""
_live: weakref.WeakSet[Journal] = weakref.WeakSet()
_exclusive: dict[str, Journal] = {}
"""Writers in locking_mode=EXCLUSIVE, by real path: in-process readers share their connection."""


REQUIRED_TABLES = frozenset({"meta", "records"})
"""Tables every journal has: a file without them is not a journal and is never written to."""


def readonly_uri(path: str) -> str:
    """An SQLite URI that opens `path` read-only and never creates a file.

    The path is percent-quoted: unquoted, ``#`` and ``?`` would end the path and open (or
    create) another file. Without a ``-wal`` file no writer is live and the journal is
    complete, so it is opened ``immutable``: a read-only WAL open would otherwise leave
    empty ``-wal`` and ``-shm`` files behind.
    """
    absolute = os.path.abspath(path)
    uri = f"file:{urllib.parse.quote(absolute)}?mode=ro"
    if not os.path.exists(absolute + "-wal"):
        uri += "&immutable=1"
    return uri


class JournalBusyError(sqlite3.OperationalError):
    """The journal is held by its live writer (exclusive mode, on a network file system)."""


def is_outage(exc: BaseException) -> bool:
    """True for errors of the journal file itself (disk full, read-only, I/O, locked), which a
    retry later may cure; False for errors of one row (constraint, type, range)."""
    if isinstance(exc, OSError):
        return True
    if not isinstance(exc, sqlite3.Error):
        return False
    name = getattr(exc, "sqlite_errorname", None)
    if name:
        return name.startswith(_OUTAGES)
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(w in text for w in _OUTAGE_WORDS)


def connect(path: str, readonly: bool = False, exclusive: bool = False) -> sqlite3.Connection:
    """Open a journal with the settings every user of it shares.

    `exclusive` is for the writer on a network file system. Other connections to a journal
    that such a writer holds fail fast with :class:`JournalBusyError`.
    """
    if not exclusive:
        _refuse_if_held_exclusively(path)
    if readonly:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=30, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        if exclusive:  # before WAL is entered: then WAL keeps its index in heap memory, not -shm
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives kill -9, not power loss
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def check_journal(conn: sqlite3.Connection, path: str) -> None:
    """Raise BadJournalError unless `conn` holds a fanlog journal."""
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise unreadable(path, exc) from exc
    missing = REQUIRED_TABLES - tables
    if missing:
        reason = ("it is an empty file, not a fanlog journal" if _size(path) == 0 else
                  f"it is an SQLite database but not a fanlog journal (no {' or '.join(sorted(missing))} "
                  "table)")  # fmt: skip
        raise BadJournalError(path, reason)


def check_journal_file(path: str, thorough: bool = False) -> None:
    """Raise BadJournalError unless `path` is a readable fanlog journal. Creates no file.

    `thorough` also reads every page (SQLite's ``quick_check``): damage is found before
    anything is done with the records, at the cost of one read of the file.
    """
    try:
        conn = connect(path, readonly=True)
    except JournalBusyError:  # held by its live writer: not damage
        raise
    except sqlite3.Error as exc:
        raise unreadable(path, exc) from exc
    try:
        check_journal(conn, path)
        if thorough:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise BadJournalError(path, f"it is damaged ({'; '.join(problems)})")
    except sqlite3.Error as exc:
        raise unreadable(path, exc) from exc
    finally:
        conn.close()


def unreadable(path: str, exc: BaseException) -> BadJournalError:
    """The error for a journal file SQLite cannot read, saying what the file is."""
    if os.path.isdir(path):
        return BadJournalError(path, "it is a directory")
    if not os.path.exists(path):
        return BadJournalError(path, "it does not exist")
    return BadJournalError(path, f"{exc} (the file is damaged or not a journal)")


def is_damage(exc: BaseException) -> bool:
    """True for SQLite's "the file is damaged or no database" errors (not locks or a full disk)."""
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def _refuse_if_held_exclusively(path: str) -> None:
    """Fail fast, with a message that says why, on a journal its live writer holds exclusively."""
    holder = writer_lock.holder(path)
    if not holder or holder.get("mode") != "exclusive" or not os.path.exists(path):
        return
    probe = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro", uri=True,
                            timeout=0.5)
    try:
        probe.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            return  # not a lock problem: the caller's own open reports it
        raise JournalBusyError(
            f"the journal {path!r} is being written by process {holder.get('pid')} on host "
            f"{holder.get('host')!r}; it is on a network file system, where fanlog keeps a live "
            "journal locked by its writer (SQLite locking_mode=EXCLUSIVE), so it can be read "
            "only after that run ends (see 'Journals on network file systems' in the docs)"
        ) from None
    finally:
        probe.close()


def open_writer(rank_dir: str) -> Journal:
    """The journal this process appends to in `rank_dir`: the first one no live writer holds.

    ``journal.sqlite`` if it is free (a resume continues it), else ``journal.2.sqlite``, ...
    On a network file system the journal is opened in exclusive mode (see fsinfo).
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
            except BaseException:
                lock.release()
                raise
        number += 1


def encode_value(kind: Kind, value: Any, run_dir: str, seq: int, key: str,
                 files: str = FILES_DIR) -> tuple[Any, Any]:
    """(num, payload) columns for one value of `kind`. Runs on the writer thread.

    `files` is the journal's files area (relative to `run_dir`), where artifacts go.
    """
    if isinstance(value, Deferred):
        value = value.resolve()
    if kind.finalize is not None:
        value = kind.finalize(value)
    storage = kind.storage
    if storage == "num":
        number = float(value)
        if number != number:  # SQLite stores NaN as NULL: keep it as text instead
            return None, "nan"
        return number, None
    if storage == "json":
        return None, json.dumps(value, allow_nan=True)
    if storage in ("png", "bytes"):
        return None, bytes(value)
    if storage == "npy":
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value), allow_pickle=False)
        return None, buffer.getvalue()
    if storage == "file":
        if isinstance(value, Captured):
            return None, place(value, run_dir, files, seq)
        if isinstance(value, CaptureFailed):
            raise OSError(f"could not capture {value.source!r} into the run: {value.reason}")
        return None, _copy_into_run(value, run_dir, seq, key, files)
    raise ValueError(f"unknown storage {storage!r} of kind {kind.name!r}")


def make_private_dirs(path: str) -> None:
    """Create `path` and every missing parent owner-only (0700).

    ``os.makedirs(mode=...)`` applies the mode to the last directory only, which would
    leave ``runs/<run_id>`` readable by everyone.
    """
    missing: list[str] = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise


def _copy_into_run(source: str, run_dir: str, seq: int, key: str, files: str = FILES_DIR) -> str:
    """Copy an artifact given as a path (not captured at log()) below the run directory;
    return its path relative to it. A failed copy raises: the record is set aside with the
    reason, never pointed at the user's original file."""
    name = os.path.basename(key.rstrip("/")) or os.path.basename(source.rstrip("/"))
    relative = os.path.join(files, str(seq), name)
    target = os.path.join(run_dir, relative)
    try:
        make_private_dirs(os.path.dirname(target))
        if os.path.isdir(source):
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)
    except OSError as exc:
        shutil.rmtree(os.path.dirname(target), ignore_errors=True)
        raise OSError(exc.errno, f"could not copy {source!r} into the run: "
                                 f"{exc.strerror or exc}") from exc
    return relative


def decode_value(storage: str, num: Any, payload: Any, run_dir: str) -> Any:
    """The value backends receive, from the journal columns."""
    if storage == "num":
        return float("nan") if num is None else num
    if storage == "json":
        return json.loads(payload)
    if storage in ("png", "bytes"):
        return bytes(payload)
    if storage == "npy":
        return np.load(io.BytesIO(payload), allow_pickle=False)
    if storage == "file":
        relative = payload.decode() if isinstance(payload, bytes) else payload
        return os.path.join(run_dir, relative)
    raise ValueError(f"unknown storage {storage!r}")


def _storage_of(kind_name: str) -> str:
    try:
        return get_kind(kind_name).storage
    except ValueError:
        return "json"


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
        self._wal_id: tuple[int, int] | None = None
        self._owns_connection = True
        shared = None if lock is not None else _exclusive.get(os.path.realpath(self.path))
        if shared is not None:  # the writer holds the file exclusively: use its connection
            self._conn, self._lock, self._owns_connection = shared._conn, shared._lock, False
        else:
            if readonly or _size(self.path) > 0:  # never add tables to a file that is not a journal
                check_journal_file(self.path)
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
        if lock is not None:
            self._wal_id = self._wal_identity()
            if self.exclusive:
                _exclusive[os.path.realpath(self.path)] = self

    def _open(self, readonly: bool) -> None:
        try:
            with _open_lock:
                if not readonly:
                    make_private_dirs(self.run_dir)
                self._conn = connect(self.path, readonly=readonly, exclusive=self.exclusive)
                if not readonly:
                    self._conn.executescript(_SCHEMA)
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
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
        return {k: json.loads(v) for k, v in rows}

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
    def append(self, pending: list[Pending], on_error: Any = None) -> int:
        """Encode and insert a batch in one transaction; return the highest seq.

        A record that cannot be encoded or inserted is set aside (the ``unstored`` table)
        and reported through `on_error(exc, key)`; the rest land.
        """
        aside: list[SetAside] = []
        rows = self.encode(pending, self.last_seq + 1, on_error, aside)
        self.insert(rows, aside, on_error)
        return self.last_seq

    def encode(self, pending: list[Pending], first_seq: int, on_error: Any = None,
               aside: list[SetAside] | None = None) -> list[Row]:
        """Rows for `pending`, numbered from `first_seq` without gaps. Runs on the writer thread.

        A value that fails to encode is reported through `on_error(exc, key)` and, with
        `aside`, listed there to be set aside by `insert()`.
        """
        rows: list[Row] = []
        seq = first_seq - 1
        for kind, key, value, step, batch_idx, epoch, when, mask, options in pending:
            seq += 1
            try:
                num, payload = encode_value(kind, value, self.run_dir, seq, key, self.files)
            except Exception as exc:  # noqa: BLE001 - reported, never raised into the writer
                seq -= 1
                if aside is not None:
                    aside.append((None, kind.name, key, step, batch_idx, when, repr(exc)))
                if on_error is not None:
                    on_error(exc, key)
                continue
            rows.append(
                (seq, kind.name, key, step, batch_idx, epoch, when, mask, num, payload,
                 json.dumps(options, default=str) if options else None)
            )
        return rows

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
                self._insert_isolating(rows, refused)
                for entry in aside or ():
                    self._set_aside(entry)
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
        if rows:
            self.last_seq = max(self.last_seq, rows[-1][0])
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
                self._set_aside((row, row[1], row[2], row[3], row[4], row[6], repr(exc)))
                refused.append((exc, row[2]))
                return
            middle = len(rows) // 2
            self._insert_isolating(rows[:middle], refused)
            self._insert_isolating(rows[middle:], refused)
            return
        self._conn.execute("RELEASE rows")

    def _set_aside(self, entry: SetAside) -> None:
        """Store what is known of a record that could not be stored (its value if possible)."""
        row, kind, key, step, batch_idx, when, reason = entry
        seq, num, payload, options = (row[0], row[8], row[9], row[10]) if row else (None,) * 4
        described = (kind, str(key), repr(step), repr(batch_idx), _float_or_none(when), reason)
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
            if not _has_table(self._conn, "unstored"):
                return []
            rows = self._conn.execute(
                "SELECT seq, kind, key, step, batch_idx, time, reason FROM unstored ORDER BY rowid"
            ).fetchall()
        names = ("seq", "kind", "key", "step", "batch_idx", "time", "reason")
        return [dict(zip(names, row, strict=True)) for row in rows]

    # ----------------------------------------------------------------- damage
    def _wal_identity(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path + "-wal")
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def check_wal(self) -> str | None:
        """A message, once, if the writer's -wal file was deleted or replaced while it writes.

        The records stay in the file the writer still holds open and reach the database at
        the final checkpoint; meanwhile other connections see an empty or broken journal.
        """
        if self.lock is None or self.wal_lost is not None:
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
        seq, kind, key, step, batch_idx, epoch, when, _mask, num, payload, options = row
        return self._record((seq, kind, key, step, batch_idx, epoch, when, num, payload, options),
                            rank)  # fmt: skip

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

    def _record(self, row: tuple, rank: int) -> Record:
        seq, kind, key, step, batch_idx, epoch, when, num, payload, options = row
        value = decode_value(_storage_of(kind), num, payload, self.run_dir)
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

    def delivery(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT name, seq, updated, error FROM delivery").fetchall()
        return {n: {"seq": s, "updated": u, "error": e} for n, s, u, e in rows}

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
                (name, seq, reason, time.time()),
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


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


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
