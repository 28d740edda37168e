"""The local journal: a per-run, per-rank SQLite database in WAL mode.

Every accepted record is appended here before any backend sees it; backends are
then fed from the journal, each from its own delivery cursor. That is what makes
"nothing lost" true: a tracker that is down, slow or added later (``fanlog sync``)
reads what it missed from the same table.

Layout of a run directory::

    <savedir>/runs/<run_id>/rank-<r>/journal.sqlite   the records
    <savedir>/runs/<run_id>/rank-<r>/files/<seq>/...   copies of logged artifacts
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
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from fanlog.errors import BadJournalError
from fanlog.kinds import Kind, get_kind
from fanlog.record import Record
from fanlog.secrets import scrub_text
from fanlog.tensors import Deferred

log = logging.getLogger("fanlog")

JOURNAL_NAME = "journal.sqlite"
FILES_DIR = "files"

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
"""

ALL_BACKENDS = -1
"""A mask bit pattern meaning "every backend" (used for records written by sync tools)."""

# A pending record as built on the caller's thread: cheap to create, turned into a row here.
Pending = tuple  # (kind: Kind, key, value, step, batch_idx, epoch, time, mask, options|None)
# An encoded row: (seq, kind name, key, step, batch_idx, epoch, time, mask, num, payload, options).
Row = tuple


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


def connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    """Open a journal with the settings every user of it shares."""
    if readonly:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=30, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
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


def encode_value(kind: Kind, value: Any, run_dir: str, seq: int, key: str) -> tuple[Any, Any]:
    """(num, payload) columns for one value of `kind`. Runs on the writer thread."""
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
        return None, _copy_into_run(value, run_dir, seq, key)
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


def _copy_into_run(source: str, run_dir: str, seq: int, key: str) -> str:
    """Copy an artifact below the run directory; return its path relative to it.

    When the copy fails (disk full, read-only save dir) the record keeps the absolute
    path of the original instead, so the artifact still reaches the trackers.
    """
    name = os.path.basename(key.rstrip("/")) or os.path.basename(source.rstrip("/"))
    relative = os.path.join(FILES_DIR, str(seq), name)
    target = os.path.join(run_dir, relative)
    try:
        make_private_dirs(os.path.dirname(target))
        if os.path.isdir(source):
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)
    except OSError as exc:
        shutil.rmtree(os.path.dirname(target), ignore_errors=True)
        log.warning("fanlog: could not copy artifact %r into the run (%s); the journal refers "
                    "to the original file", source, exc.strerror or exc)  # fmt: skip
        return os.path.abspath(source)
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
    """One journal file. The writer thread appends; dispatcher threads read and record delivery."""

    def __init__(self, path: str, readonly: bool = False) -> None:
        self.path = os.path.abspath(path)
        self.run_dir = os.path.dirname(self.path)
        if readonly or _size(self.path) > 0:  # never add tables to a file that is not a journal
            check_journal_file(self.path)
        try:
            if not readonly:
                make_private_dirs(self.run_dir)
            self._conn = connect(self.path, readonly=readonly)
            if not readonly:
                self._conn.executescript(_SCHEMA)
                os.chmod(self.path, 0o600)
            row = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()
        except (OSError, sqlite3.Error) as exc:  # disk full, read-only, not a directory, ...
            if isinstance(exc, sqlite3.Error) and (readonly or is_damage(exc)):
                raise unreadable(self.path, exc) from exc
            what = "open" if readonly else "create or open"
            raise OSError(f"fanlog: cannot {what} the journal {self.path!r}: {exc}") from exc
        self.last_seq: int = row[0]
        """Highest committed seq (updated by the writer after each commit)."""
        self._lock = threading.Lock()  # one connection per Journal; calls from threads take turns

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

    def register_backend(self, name: str, kinds: Iterable[str], options: dict[str, Any]) -> int:
        """The slot (bit index) of backend `name` in this journal; kept across restarts."""
        with self._lock, self._conn:
            row = self._conn.execute("SELECT slot FROM backends WHERE name = ?", (name,)).fetchone()
            if row is not None:
                return int(row[0])
            slot = self._conn.execute("SELECT COALESCE(MAX(slot) + 1, 0) FROM backends").fetchone()
            if slot[0] >= 62:
                raise ValueError("a journal holds at most 62 backends")
            self._conn.execute(
                "INSERT INTO backends (slot, name, kinds, options) VALUES (?, ?, ?, ?)",
                (slot[0], name, json.dumps(sorted(kinds)), json.dumps(options, default=str)),
            )
            return int(slot[0])

    def backends(self) -> dict[str, int]:
        with self._lock:
            return dict(self._conn.execute("SELECT name, slot FROM backends").fetchall())

    # ----------------------------------------------------------------- writing
    def append(self, pending: list[Pending], on_error: Any = None) -> int:
        """Encode and insert a batch in one transaction; return the highest seq.

        A record whose value cannot be encoded (a device snapshot that failed) is
        skipped and reported through `on_error(exc, key)`; the rest land.
        """
        self.insert(self.encode(pending, self.last_seq + 1, on_error))
        return self.last_seq

    def encode(self, pending: list[Pending], first_seq: int, on_error: Any = None) -> list[Row]:
        """Rows for `pending`, numbered from `first_seq` without gaps. Runs on the writer thread."""
        rows: list[Row] = []
        seq = first_seq - 1
        for kind, key, value, step, batch_idx, epoch, when, mask, options in pending:
            seq += 1
            try:
                num, payload = encode_value(kind, value, self.run_dir, seq, key)
            except Exception as exc:  # noqa: BLE001 - reported, never raised into the writer
                seq -= 1
                if on_error is not None:
                    on_error(exc, key)
                continue
            rows.append(
                (seq, kind.name, key, step, batch_idx, epoch, when, mask, num, payload,
                 json.dumps(options, default=str) if options else None)
            )
        return rows

    def insert(self, rows: list[Row]) -> None:
        """Insert encoded rows in one transaction (raises, inserting nothing, on disk full)."""
        if not rows:
            return
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT INTO records (seq, kind, key, step, batch_idx, epoch, time, mask, num,"
                " payload, options) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        self.last_seq = max(self.last_seq, rows[-1][0])

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
        with self._lock:
            self._conn.close()

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
