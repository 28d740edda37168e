"""Where journals live: the one place that builds and parses the save dir's paths.

::

    <savedir>/runs/<run_id>/rank-<r>/journal.sqlite      the first writer's records
    <savedir>/runs/<run_id>/rank-<r>/files/<seq>/...      its artifacts
    <savedir>/runs/<run_id>/rank-<r>/journal.2.sqlite    a second writer's (another logger,
    <savedir>/runs/<run_id>/rank-<r>/files.2/<seq>/...    a forked child, a concurrent resume)

A journal has one writer at a time (see :mod:`fanlog.journal.lock`); a logger that finds
``journal.sqlite`` held takes the next free number. Below, the *rank directory* is
``runs/<run_id>/rank-<r>`` (what :class:`~fanlog.record.RunInfo` calls ``run_dir``) and the
*run directory* is ``runs/<run_id>``, which holds every rank.
"""

from __future__ import annotations

import glob
import os
import re

RUNS_DIR = "runs"
RANK_PREFIX = "rank-"
JOURNAL_NAME = "journal.sqlite"
FILES_DIR = "files"
JOURNAL_GLOB = "journal*.sqlite"
_JOURNAL_FILE = re.compile(r"^journal(?:\.([2-9]|[1-9]\d+))?\.sqlite$")


class RunNotFoundError(LookupError):
    """A run given by id (or prefix) that is not under the save dir, or is ambiguous."""


# ----------------------------------------------------------------------------- building
def rank_dir(savedir: str, run_id: str, rank: int) -> str:
    """``<savedir>/runs/<run_id>/rank-<rank>``, absolute: where one rank's journals go."""
    return os.path.abspath(os.path.join(savedir, RUNS_DIR, run_id, f"{RANK_PREFIX}{rank}"))


def journal_file(rank_dir: str, number: int) -> str:
    """The path of journal `number` (1, 2, ...) of a rank directory."""
    name = JOURNAL_NAME if number == 1 else f"journal.{number}.sqlite"
    return os.path.join(rank_dir, name)


def files_name(journal_path: str) -> str:
    """The files area of a journal, relative to its directory: ``files``, ``files.2``, ..."""
    number = journal_number(journal_path) or 1
    return FILES_DIR if number == 1 else f"{FILES_DIR}.{number}"


def sync_lock_file(rank_dir: str, cursor: str) -> str:
    """The file ``fanlog sync`` locks while it delivers a rank's journal to `cursor`."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in cursor)
    return os.path.join(rank_dir, f".sync-{safe}.lock")


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


# ----------------------------------------------------------------------------- parsing
def journal_number(path: str) -> int | None:
    """1 for ``journal.sqlite``, n for ``journal.<n>.sqlite``, None for any other file."""
    match = _JOURNAL_FILE.match(os.path.basename(path))
    if match is None:
        return None
    return int(match.group(1) or 1)


def journal_label(path: str) -> str:
    """How listings name a journal beside its rank: '' for the first, '#2' for the second, ..."""
    number = journal_number(path) or 1
    return "" if number == 1 else f"#{number}"


def sort_key(path: str) -> tuple[str, int]:
    """Journals in directory order, the first writer's before its siblings."""
    return os.path.dirname(path), journal_number(path) or 1


def rank_of(journal_path: str) -> int | None:
    """The rank a journal's directory is named after (``rank-3`` → 3); None for other names."""
    name = os.path.basename(os.path.dirname(os.path.abspath(journal_path)))
    number = name.removeprefix(RANK_PREFIX)
    return int(number) if name.startswith(RANK_PREFIX) and number.isdigit() else None


def run_dir_of(journal_path: str) -> str:
    """The run directory (``runs/<run_id>``) that holds a journal's rank directory."""
    return os.path.dirname(os.path.dirname(os.path.abspath(journal_path)))


def run_id_of(journal_path: str) -> str:
    """The run id a journal's place in the save dir gives (its metadata is the authority)."""
    return os.path.basename(run_dir_of(journal_path))


def savedir_of(journal_path: str) -> str:
    """The save dir a journal is under (``<savedir>/runs/<run_id>/rank-<r>/journal.sqlite``)."""
    return os.path.dirname(os.path.dirname(run_dir_of(journal_path)))


# ----------------------------------------------------------------------------- finding
def journal_paths(path: str | os.PathLike[str]) -> list[str]:
    """Journals under `path`: a journal file, a rank dir, a run dir, or a savedir (all runs).

    Every journal of a rank is listed (``journal.sqlite``, ``journal.2.sqlite``, ...), the
    first writer's first. `path` may contain glob characters such as ``[``: it is escaped.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return [os.path.abspath(path)]
    base = glob.escape(path)
    candidates = [
        os.path.join(base, JOURNAL_GLOB),
        os.path.join(base, f"{RANK_PREFIX}*", JOURNAL_GLOB),
        os.path.join(base, RUNS_DIR, "*", f"{RANK_PREFIX}*", JOURNAL_GLOB),
    ]
    for pattern in candidates:
        found = [p for p in glob.glob(pattern) if journal_number(p) is not None]
        if found:
            return sorted((os.path.abspath(p) for p in found), key=sort_key)
    raise FileNotFoundError(f"no fanlog journal under {path!r}")


def resolve_run(run: str, savedir: str) -> str:
    """A path to read: `run` itself if it exists, else a run id (or unique prefix) in `savedir`.

    Raises :class:`RunNotFoundError` naming the candidates when there is no single match.
    """
    if os.path.exists(run):
        return run
    runs_dir = os.path.join(savedir, RUNS_DIR)
    exact = os.path.join(runs_dir, run)
    if os.path.isdir(exact):
        return exact
    known = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    matches = [name for name in known if name.startswith(run)]
    if len(matches) == 1:
        return os.path.join(runs_dir, matches[0])
    if matches:
        raise RunNotFoundError(f"{run!r} matches several runs: {', '.join(matches)}")
    listing = ", ".join(known[-10:]) if known else f"none under {runs_dir!r}"
    raise RunNotFoundError(f"{run!r} is neither a path nor a run id; runs: {listing}")
