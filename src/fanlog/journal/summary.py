"""What a journal holds, counted: the lines of ``fanlog ls`` and ``show``, and what sync would send.

All read-only: a summary never changes the file, so it works on a live run, a copied save
dir and a read-only file system.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from typing import Any

from fanlog.errors import BadJournalError
from fanlog.journal import schema
from fanlog.journal.connection import JournalBusyError, open_checked, unreadable
from fanlog.journal.layout import rank_of, run_id_of
from fanlog.journal.status import effective_status

INFLIGHT_SUFFIX = ":inflight"
"""Delivery entry that ``fanlog sync`` keeps beside its cursor: the last seq of the batch
being sent (not a tracker)."""
_BEFORE_DECLARATIONS = {"JournalBackend"}
"""In journals written before backends declared ``needs_delivery``: the classes whose store
is the journal itself."""
"""Backend classes whose store is the journal itself (no delivery cursor)."""


def journal_summary(path: str) -> dict[str, Any]:
    """One journal's metadata, record counts per kind, and delivery per tracker.

    Delivery is counted in records meant for each tracker (its mask bit), not in seq
    numbers, so ``delivered == total`` means the tracker has everything; records it
    refused for good are counted apart (``rejected``), not as delivered.
    """
    with open_checked(path) as conn:
        meta = schema.read_meta(conn)
        counts = dict(conn.execute("SELECT kind, COUNT(*) FROM records GROUP BY kind ORDER BY kind"))
        cursors = {
            name: (seq, error) for name, seq, error in conn.execute("SELECT name, seq, error FROM delivery")
        }
        refused = _rejected_seqs(conn)
        trackers = []
        for name, slot, options in conn.execute("SELECT name, slot, options FROM backends ORDER BY slot"):
            seq, error = cursors.get(name, (0, None))
            spec = json.loads(options or "{}")
            needs_delivery = spec.get("needs_delivery", spec.get("class") not in _BEFORE_DECLARATIONS)
            stored = not needs_delivery and name not in cursors
            trackers.append(_tracker(conn, name, seq, error, 1 << int(slot), refused, stored))
        # `fanlog sync --to X` on a run that never had X keeps its own cursor (no mask bit).
        attached = {t["name"] for t in trackers}
        for name, (seq, error) in cursors.items():
            if name not in attached and not name.endswith(INFLIGHT_SUFFIX):
                trackers.append(_tracker(conn, name, seq, error, None, refused, False))
        unstored = 0
        if schema.has_table(conn, "unstored"):
            unstored = conn.execute("SELECT COUNT(*) FROM unstored").fetchone()[0]
    return {
        "path": os.path.abspath(path),
        "run_id": meta.get("run_id"),
        "run_name": meta.get("run_name"),
        "experiment_name": meta.get("experiment_name"),
        "rank": int(meta.get("rank", 0)),
        "world_size": meta.get("world_size"),
        "started": meta.get("started"),
        "ended": meta.get("ended"),
        "status": effective_status(meta),
        "records": sum(counts.values()),
        "kinds": counts,
        "trackers": trackers,
        "journal": os.path.basename(path),
        "unstored": int(unstored),
        "forked_from": meta.get("forked_from"),
        "schema_version": meta.get(schema.VERSION_KEY, 1),
    }


def summary_or_error(path: str) -> dict[str, Any]:
    """A journal's summary, or one whose status says why it could not be read (one bad file
    must not hide the other runs of a listing)."""
    try:
        return journal_summary(path)
    except JournalBusyError:  # a live run on a network file system
        status = "running (held by its writer on a network file system; readable after the run)"
    except BadJournalError as exc:  # damaged, not a journal, or from a newer fanlog
        status = f"unreadable ({exc.reason})"
    except sqlite3.Error as exc:
        status = f"unreadable ({unreadable(path, exc).reason})"
    rank = rank_of(path)
    return {
        "path": os.path.abspath(path),
        "run_id": run_id_of(path),
        "run_name": None,
        "experiment_name": None,
        "rank": -1 if rank is None else rank,
        "world_size": None,
        "started": None,
        "ended": None,
        "status": status,
        "records": 0,
        "kinds": {},
        "trackers": [],
        "journal": os.path.basename(path),
        "unstored": 0,
        "forked_from": None,
        "schema_version": None,
    }


def pending_by_kind(
    path: str, after: int, slot: int | None, supported: Iterable[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Records after seq `after` (of backend `slot`'s mask; None: all), counted by kind:
    (kinds in `supported`, other kinds)."""
    query = "SELECT kind, COUNT(*) FROM records WHERE seq > ?"
    params: list[Any] = [after]
    if slot is not None:
        query += " AND (mask & ?) != 0"
        params.append(1 << slot)
    with open_checked(path) as conn:
        rows = conn.execute(query + " GROUP BY kind", params).fetchall()
    wanted = frozenset(supported)
    pending = {k: int(n) for k, n in rows if k in wanted}
    unsupported = {k: int(n) for k, n in rows if k not in wanted}
    return pending, unsupported


def _tracker(
    conn: sqlite3.Connection,
    name: str,
    seq: int,
    error: str | None,
    bit: int | None,
    refused: dict[str, list[int]],
    stored: bool,
) -> dict[str, Any]:
    """One tracker's line: its records (those of its mask bit; every record for a cursor that
    has no bit), how many it has, how many it refused for good."""
    query = "SELECT COUNT(*), COALESCE(SUM(seq <= ?), 0) FROM records"
    params: tuple[int, ...] = (seq,)
    if bit is not None:
        query += " WHERE (mask & ?) != 0"
        params = (seq, bit)
    total, delivered = conn.execute(query, params).fetchone()
    rejected = refused.get(name, [])
    delivered -= sum(1 for r in rejected if r <= seq)
    return {
        "name": name,
        "total": int(total),
        "delivered": int(total) if stored else int(delivered),
        "rejected": len(rejected),
        "error": error,
        "in_journal": stored,
    }


def _rejected_seqs(conn: sqlite3.Connection) -> dict[str, list[int]]:
    """Per delivery entry, the seqs of the records it refused for good (none in journals
    written before the ``rejected`` table existed)."""
    if not schema.has_table(conn, "rejected"):
        return {}
    found: dict[str, list[int]] = {}
    for name, seq in conn.execute("SELECT name, seq FROM rejected ORDER BY seq"):
        found.setdefault(name, []).append(int(seq))
    return found
