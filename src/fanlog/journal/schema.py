"""The journal's tables and their version.

=============  ===============================================================================
table          what it holds
=============  ===============================================================================
meta           key → JSON value: run id, rank, status, pid, host, ..., ``schema_version``
backends       one row per tracker of the run: its mask bit (``slot``), kinds and options
records        one row per accepted record: seq, kind, key, step, ..., ``num`` or ``payload``
kinds          kind name → storage form (``num``, ``json``, ``npy``, ...) of its rows
delivery       one cursor per tracker (or ``sync:<tracker>``): the last seq it has
rejected       records a tracker refused for good, with the reason
unstored       records that could not be stored (their value or row was refused), with the reason
health         per tracker the delivery agent serves: its state (failing, stalled, closed, ...)
               and what the user may read in the training process (``info``: a run id)
=============  ===============================================================================

``schema_version`` in ``meta`` says which of these a file has; a journal without it is
version 1 (no ``kinds`` table). The ``health`` table came later in version 2 without a new
version (older readers ignore it, and a journal without it is read as having no agent). A
reader refuses a journal of a newer version than it knows, with :class:`NewerJournalError`,
and nothing ever writes into one.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from fanlog.errors import BadJournalError

SCHEMA_VERSION = 2
"""The version this fanlog writes, and the newest it reads. 2 added the ``kinds`` table."""
VERSION_KEY = "schema_version"

DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS backends (
    slot INTEGER PRIMARY KEY, name TEXT UNIQUE, kinds TEXT, options TEXT);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, step INTEGER NOT NULL,
    batch_idx INTEGER, epoch INTEGER, time REAL NOT NULL, mask INTEGER NOT NULL,
    num REAL, payload BLOB, options TEXT);
CREATE INDEX IF NOT EXISTS records_key ON records (key, seq);
CREATE TABLE IF NOT EXISTS kinds (name TEXT PRIMARY KEY, storage TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS delivery (
    name TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated REAL, error TEXT);
CREATE TABLE IF NOT EXISTS rejected (
    name TEXT NOT NULL, seq INTEGER NOT NULL, reason TEXT, time REAL, PRIMARY KEY (name, seq));
CREATE TABLE IF NOT EXISTS unstored (
    seq INTEGER, kind TEXT, key TEXT, step TEXT, batch_idx TEXT, time REAL, reason TEXT,
    num REAL, payload BLOB, options TEXT);
CREATE TABLE IF NOT EXISTS health (
    name TEXT PRIMARY KEY, state TEXT NOT NULL, failing_since REAL, stalled_since REAL,
    error TEXT, info TEXT, pid INTEGER, updated REAL);
"""

REQUIRED_TABLES = frozenset({"meta", "records"})
"""Tables every journal has: a file without them is not a journal and is never written to."""


class NewerJournalError(BadJournalError):
    """A journal written by a newer fanlog, with a schema this one does not know."""

    def __init__(self, path: str, version: int) -> None:
        super().__init__(
            path,
            f"it was written by a newer fanlog (schema {version}); this fanlog reads up to "
            f"schema {SCHEMA_VERSION}; upgrade fanlog to read it",
        )
        self.version = version


def tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


def schema_version(conn: sqlite3.Connection, path: str) -> int:
    """The version a journal says it has (1 when it says none)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (VERSION_KEY,)).fetchone()
    if row is None:
        return 1
    try:
        version = json.loads(row[0])
    except (TypeError, ValueError):
        version = None
    if type(version) is not int:
        raise BadJournalError(path, f"its {VERSION_KEY} is {row[0]!r}, not a whole number")
    return version


def check_version(conn: sqlite3.Connection, path: str) -> int:
    """The journal's schema version; NewerJournalError when this fanlog cannot read it."""
    version = schema_version(conn, path)
    if version > SCHEMA_VERSION:
        raise NewerJournalError(path, version)
    return version


def create(conn: sqlite3.Connection, path: str) -> None:
    """Give a new or older journal every table of this version, and say so in ``meta``.

    The caller has checked the file (a journal of this or an older version, or empty).
    Upgrading is only adding tables: rows of kinds missing from ``kinds`` are decoded by
    the kinds registered in the reading process, as version 1 did.
    """
    conn.executescript(DDL)
    if schema_version(conn, path) < SCHEMA_VERSION:
        with conn:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (VERSION_KEY, json.dumps(SCHEMA_VERSION)),
            )


def read_meta(conn: sqlite3.Connection) -> dict[str, Any]:
    return {key: json.loads(value) for key, value in conn.execute("SELECT key, value FROM meta")}


def recorded_kinds(conn: sqlite3.Connection) -> dict[str, str]:
    """Storage form per kind name, as the writer recorded it ({} for a version 1 journal)."""
    if not has_table(conn, "kinds"):
        return {}
    return dict(conn.execute("SELECT name, storage FROM kinds").fetchall())
