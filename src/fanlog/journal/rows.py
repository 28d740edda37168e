"""Rows of the ``records`` table as the writer builds and inserts them, cheaply.

The writer runs in the training process and holds the GIL while it works, so every
microsecond per record is paid by the training loop. Three choices keep it small:

- a record from ``log()`` (:class:`Pending`) holds only plain values (the kind's *name*,
  options as JSON text), so the garbage collector untracks it at its first pass instead of
  promoting it toward the old generations, where it would trigger full collections;
- a row is a plain tuple (a NamedTuple costs twice as much to build);
- rows go in with one multi-row ``INSERT`` per :data:`CHUNK` rows. ``executemany`` steps
  SQLite once per row and releases the GIL around each step; with a busy training loop,
  taking the GIL back costs up to the 5 ms switch interval each time, so the writer
  crawled (about 1,700 rows/s measured) and stole the GIL once per row.
"""

from __future__ import annotations

import json
import sqlite3
from itertools import chain
from typing import Any, Final, NamedTuple

from fanlog.errors import describe


class Pending(NamedTuple):
    """A record as `log()` hands it over on the caller's thread, before it has a seq.

    The hot path builds it as a plain tuple in this field order (constructing the named
    type costs about 0.25 µs more per call); everything downstream unpacks it by position.
    """

    kind: str
    """The kind's name (a plain str: see the module docstring)."""
    key: str
    value: Any
    step: int
    batch_idx: int | None
    epoch: int | None
    time: float
    mask: int
    """One bit per tracker slot that the gate let through."""
    options: str | dict[str, Any] | None
    """The record's keyword options as JSON text (``log()`` encodes them at the call)."""


Row = tuple[int, str, str, int, int | None, int | None, float, int, float | None, Any, str | None]
"""An encoded record, a plain tuple of the ``records`` columns in order: seq, kind, key, step,
batch_idx, epoch, time, mask, num, payload, options (JSON text)."""
SEQ: Final = 0
KIND: Final = 1
KEY: Final = 2
STEP: Final = 3
BATCH_IDX: Final = 4
EPOCH: Final = 5
TIME: Final = 6
MASK: Final = 7
NUM: Final = 8
PAYLOAD: Final = 9
OPTIONS: Final = 10


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


COLUMNS = "seq, kind, key, step, batch_idx, epoch, time, mask, num, payload, options"
CHUNK = 512
"""Rows per INSERT statement: binding them holds the GIL for a fraction of a millisecond,
and SQLite then stores them in one step without it."""
_SIZES = tuple(CHUNK >> shift for shift in range(CHUNK.bit_length()))
"""Statement sizes 512, 256, ..., 1: any count is a sum of them, and each is prepared once
(sqlite3 caches the statements), instead of one new statement per odd batch size."""
_STATEMENTS = {
    size: f"INSERT INTO records ({COLUMNS}) VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * size)
    for size in _SIZES
}


def insert_rows(conn: sqlite3.Connection, rows: list[Row]) -> None:
    """Insert `rows` in the open transaction, :data:`CHUNK` rows per statement."""
    start, total = 0, len(rows)
    for size in _SIZES:
        statement = _STATEMENTS[size]
        while total - start >= size:
            conn.execute(statement, list(chain.from_iterable(rows[start : start + size])))
            start += size


def storable_text(text: object) -> str:
    """`text` as a str SQLite can store: lone surrogates escaped.

    A str from ``os.fsdecode()`` of a name that is not UTF-8 holds the bytes as surrogates
    (``b"acc_\\xff"`` gives ``"acc_\\udcff"``); those come back as ``\\xff``, the original
    byte. Other lone surrogates become ``\\udXXX``. Anything else is returned unchanged.
    """
    text = text if isinstance(text, str) else safe_repr(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def escaped_row(row: Row) -> Row | None:
    """`row` with lone surrogates in its kind and key escaped, or None if it has none."""
    kind, key = row[KIND], row[KEY]
    fixed_kind = storable_text(kind) if isinstance(kind, str) else kind
    fixed_key = storable_text(key) if isinstance(key, str) else key
    if fixed_kind is kind and fixed_key is key:
        return None
    return (row[SEQ], fixed_kind, fixed_key, *row[STEP:])


def options_json(options: dict[str, Any]) -> str:
    """`options` (a log() call's keyword options) as JSON text; objects JSON has no form for
    become their str(). Raises ValueError naming the option that cannot be stored."""
    try:
        return json.dumps(options, default=str)
    except Exception:  # noqa: BLE001 - a user object's __str__ may raise anything
        pass
    for name, value in options.items():
        try:
            json.dumps({name: value}, default=str)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(
                f"keyword option {name!r} cannot be stored: expected a value JSON can hold "
                f"(number, str, bool, None, list, dict with str keys; other objects as their "
                f"str()), got {describe(value)} ({safe_repr(exc)})"
            ) from None
    raise ValueError("the keyword options cannot be stored as JSON")


def safe_repr(value: object) -> str:
    """``repr(value)``, or a description when its own ``__repr__`` fails."""
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a user object's __repr__ may raise anything
        return f"<{type(value).__name__} object (its repr() failed)>"
