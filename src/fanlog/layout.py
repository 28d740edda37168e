"""Where journals live: one or more per rank directory, each with its own files area.

::

    <savedir>/runs/<run_id>/rank-<r>/journal.sqlite      the first writer's records
    <savedir>/runs/<run_id>/rank-<r>/files/<seq>/...      its artifacts
    <savedir>/runs/<run_id>/rank-<r>/journal.2.sqlite    a second writer's (another logger,
    <savedir>/runs/<run_id>/rank-<r>/files.2/<seq>/...    a forked child, a concurrent resume)

A journal has one writer at a time (see :mod:`fanlog.writer_lock`); a logger that finds
``journal.sqlite`` held takes the next free number.
"""

from __future__ import annotations

import os
import re

JOURNAL_NAME = "journal.sqlite"
FILES_DIR = "files"
JOURNAL_GLOB = "journal*.sqlite"
_JOURNAL_FILE = re.compile(r"^journal(?:\.([2-9]|[1-9]\d+))?\.sqlite$")


def journal_file(rank_dir: str, number: int) -> str:
    """The path of journal `number` (1, 2, ...) of a rank directory."""
    name = JOURNAL_NAME if number == 1 else f"journal.{number}.sqlite"
    return os.path.join(rank_dir, name)


def journal_number(path: str) -> int | None:
    """1 for ``journal.sqlite``, n for ``journal.<n>.sqlite``, None for any other file."""
    match = _JOURNAL_FILE.match(os.path.basename(path))
    if match is None:
        return None
    return int(match.group(1) or 1)


def files_name(journal_path: str) -> str:
    """The files area of a journal, relative to its directory: ``files``, ``files.2``, ..."""
    number = journal_number(journal_path) or 1
    return FILES_DIR if number == 1 else f"{FILES_DIR}.{number}"


def journal_label(path: str) -> str:
    """How listings name a journal beside its rank: '' for the first, '#2' for the second, ..."""
    number = journal_number(path) or 1
    return "" if number == 1 else f"#{number}"


def sort_key(path: str) -> tuple[str, int]:
    """Journals in directory order, the first writer's before its siblings."""
    return os.path.dirname(path), journal_number(path) or 1
