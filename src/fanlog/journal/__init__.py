"""The local journal: one SQLite file per writer of a run's rank, and everything about it.

This package is the only code that knows the journal's tables, its place in the save dir,
and how to tell whether its writer still runs; ``fanlog sync``, the CLI and
:func:`fanlog.read_run` call it.

=============  ================================================================================
module         owns
=============  ================================================================================
layout         ``<savedir>/runs/<run_id>/rank-<r>/journal[.n].sqlite`` and ``files[.n]/``
schema         the tables, ``schema_version``, and the storage form recorded per kind
connection     opening a journal, and the checks before reading one (damage, newer schema)
store          :class:`Journal`: append (the one writer), read, delivery cursors, refusals
rows           a record as ``log()`` hands it over, a row as the writer inserts it (cheaply)
codec          a value in the ``num``/``payload`` columns and back
lock           one writer per journal, and the rule for "is the writer alive?"
status         a run's effective status (``interrupted`` when its writer died)
summary        the counts ``fanlog ls`` and ``show`` print, and what sync would send
capture        artifacts captured into the files area at ``log()``
fsinfo         network file systems, where the journal is opened in exclusive mode
=============  ================================================================================
"""

from __future__ import annotations

from fanlog.journal.connection import (
    JournalBusyError,
    check_journal,
    check_journal_file,
    connect,
    is_damage,
    is_outage,
    read_meta,
    readonly_uri,
    unreadable,
)
from fanlog.journal.layout import FILES_DIR, JOURNAL_NAME, journal_paths, make_private_dirs
from fanlog.journal.rows import Pending, Row, SetAside
from fanlog.journal.schema import SCHEMA_VERSION, NewerJournalError
from fanlog.journal.store import Journal, forget_after_fork, live_journals, open_writer
from fanlog.journal.store import _open_lock as _open_lock  # taken by the fork hooks (forking.py)

__all__ = [
    "FILES_DIR",
    "JOURNAL_NAME",
    "SCHEMA_VERSION",
    "Journal",
    "JournalBusyError",
    "NewerJournalError",
    "Pending",
    "Row",
    "SetAside",
    "check_journal",
    "check_journal_file",
    "connect",
    "forget_after_fork",
    "is_damage",
    "is_outage",
    "journal_paths",
    "live_journals",
    "make_private_dirs",
    "open_writer",
    "read_meta",
    "readonly_uri",
    "unreadable",
]
