"""Opening a journal file: the SQLite settings every user shares, and the checks before reading.

Every reader (``read_run``, ``fanlog ls/show/export/sync``) opens a journal through
:func:`connect` and checks it with :func:`check_journal`: a file that is not a journal, is
damaged, or comes from a newer fanlog is reported with a :class:`~fanlog.errors.BadJournalError`
that says which, and is never written to.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from typing import Any

from fanlog.errors import BadJournalError
from fanlog.journal import lock, schema

_OUTAGES = (
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_NOMEM",
    "SQLITE_PROTOCOL",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_PERM",
)
_OUTAGE_WORDS = (
    "disk is full",
    "readonly",
    "read-only",
    "disk i/o",
    "unable to open",
    "locked",
    "malformed",
    "not a database",
    "out of memory",
    "closed database",
)


class JournalBusyError(sqlite3.OperationalError):
    """The journal is held by its live writer (exclusive mode, on a network file system)."""


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
    """Raise BadJournalError unless `conn` holds a fanlog journal this fanlog can read."""
    try:
        missing = schema.REQUIRED_TABLES - schema.tables(conn)
        if not missing:
            schema.check_version(conn, path)
            return
    except sqlite3.Error as exc:
        raise unreadable(path, exc) from exc
    if size(path) == 0:
        reason = "it is an empty file, not a fanlog journal"
    elif not schema.tables(conn):
        reason = (
            "it is an SQLite database without tables: a logger was interrupted while it "
            "created this journal; the next logger of this run and rank reuses it"
        )
    else:
        reason = (
            f"it is an SQLite database but not a fanlog journal (no {' or '.join(sorted(missing))} table)"
        )
    raise BadJournalError(path, reason)


def is_blank(path: str) -> bool:
    """True for an SQLite file without a single table: what a writer leaves when it is
    interrupted (kill -9, Ctrl-C) after creating the file and before creating its tables.
    Its writer lock's next holder gives it the tables (see Journal)."""
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True)
    except sqlite3.Error:
        return False
    try:
        return conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def check_journal_file(path: str, thorough: bool = False) -> None:
    """Raise BadJournalError unless `path` is a readable fanlog journal. Creates no file.

    `thorough` also reads every page (SQLite's ``quick_check``): damage is found before
    anything is done with the records, at the cost of one read of the file.
    """
    with open_checked(path) as conn:
        if not thorough:
            return
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        except sqlite3.Error as exc:
            raise unreadable(path, exc) from exc
        if problems != ["ok"]:
            raise BadJournalError(path, f"it is damaged ({'; '.join(problems)})")


@contextlib.contextmanager
def open_checked(path: str) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a journal that passed :func:`check_journal`, closed after."""
    try:
        conn = connect(path, readonly=True)
    except JournalBusyError:  # held by its live writer: not damage
        raise
    except sqlite3.Error as exc:
        raise unreadable(path, exc) from exc
    try:
        check_journal(conn, path)
        yield conn
    finally:
        conn.close()


def read_meta(path: str) -> dict[str, Any]:
    """A journal's ``meta`` table (run id, rank, status, pid, host, ...), read-only."""
    with open_checked(path) as conn:
        return schema.read_meta(conn)


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


def size(path: str) -> int:
    """The file's size in bytes; -1 when it cannot be read."""
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def _refuse_if_held_exclusively(path: str) -> None:
    """Fail fast, with a message that says why, on a journal its live writer holds exclusively."""
    holder = lock.holder(path)
    if not holder or holder.get("mode") != "exclusive" or not os.path.exists(path):
        return
    probe = sqlite3.connect(
        f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro", uri=True, timeout=0.5
    )
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
