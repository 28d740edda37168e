"""A run's status as its journal tells it, and whether the process that writes it still runs.

A journal says ``running`` from the moment its logger starts until it is closed with
``finished``, ``failed`` or ``killed``. A process killed hard (``kill -9``, out of memory)
never closes it: such a journal is *interrupted*, which this host can tell only when the
writer ran here (:func:`~fanlog.journal.lock.writer_alive` is the one rule). ``fanlog ls``
and ``show`` print :func:`effective_status`; ``fanlog sync`` refuses to race a live writer
(:func:`writer_is_live`) and ends a tracker's run with :func:`end_status`.
"""

from __future__ import annotations

import os
from typing import Any

from fanlog.journal.connection import read_meta
from fanlog.journal.lock import writer_alive
from fanlog.record import RunStatus

RUNNING = "running"
INTERRUPTED = "interrupted"
_ENDED = frozenset(status.value for status in RunStatus)


def effective_status(meta: dict[str, Any]) -> str:
    """The journal's status, or ``interrupted`` for a run whose process died without closing it.

    A journal says ``running`` until its logger is destroyed; if the process that wrote it
    ran on this host and is gone, the run was killed hard (``kill -9``, OOM) and
    ``fanlog sync`` can still deliver what it holds.
    """
    status = str(meta.get("status", "unknown"))
    if status == RUNNING and writer_alive(meta.get("pid"), meta.get("host")) is False:
        return INTERRUPTED
    return status


def writer_is_live(meta: dict[str, Any]) -> bool:
    """True when the journal says ``running`` and its writer is known to run (on this host)."""
    return meta.get("status") == RUNNING and writer_alive(meta.get("pid"), meta.get("host")) is True


def end_status(meta: dict[str, Any]) -> RunStatus:
    """The status a tracker's run gets when ``fanlog sync`` has delivered the journal.

    The run's own end status; ``finished`` (so far) while its writer still runs; ``killed``
    for a run that never closed (``kill -9``), or whose writer this host cannot see.
    """
    status = meta.get("status")
    if status in _ENDED:
        return RunStatus(status)
    if writer_alive(meta.get("pid"), meta.get("host")) is True:
        return RunStatus.FINISHED
    return RunStatus.KILLED


def owner_meta(journal_path: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The journal's metadata, where a forked child's journal takes its parent's status, pid,
    host and trackers: the tracker run is the parent's, so it ends (and is live) as the
    parent's does. A child whose parent journal is gone keeps its own."""
    parent = meta.get("forked_from")
    if not isinstance(parent, dict) or not parent.get("journal"):
        return meta
    parent_path = os.path.join(os.path.dirname(journal_path), str(parent["journal"]))
    try:
        parent_meta = read_meta(parent_path)
    except Exception:  # noqa: BLE001 - the parent's journal is gone or unreadable
        return meta
    owner: dict[str, Any] = {
        k: parent_meta[k] for k in ("status", "pid", "host", "backends") if k in parent_meta
    }
    return {**meta, **owner}
