"""Artifacts are captured when `log()` is called, not later on a background thread.

A checkpoint callback may delete or replace its file right after logging it (Lightning's
ModelCheckpoint with ``save_top_k=1`` does), so the writer thread cannot be the first to
look at it. `capture()` runs on the caller's thread: it hard-links the file (O(1)) into the
journal's files area, or copies it where a link is not possible (another file system,
``protected_hardlinks``, ...); a directory is captured file by file. The writer then only
moves the captured entry to ``files/<seq>/`` (a rename) and records its path.

A hard link shares the file's data: a later write *into* the same file (rather than a
new file under the same name, which is what checkpoint savers do) changes the captured
content too. So the default mode, ``auto``, links only files of at least LINK_MIN_BYTES
(checkpoints, where a copy would cost the loop real time) and copies smaller ones (a
script or a config that an editor may rewrite in place). ``link`` links every file,
``copy`` copies every file. The writer notices a linked file that changed before it was
committed and says so.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from fanlog.validate import refuse_special

CAPTURE_MODES = ("auto", "link", "copy")
LINK_MIN_BYTES = 16 * 2**20
"""In mode ``auto``, files at least this large are hard-linked, smaller ones copied."""
INCOMING = "incoming"
"""Subdirectory of a files area where captured artifacts wait for their seq."""


@dataclass(frozen=True)
class Captured:
    """An artifact held in the run since the `log()` call, waiting for its record's seq."""

    staged: str
    """Directory below ``<files>/incoming/`` that holds `name`."""
    name: str
    source: str
    stamp: tuple[int, int] | None
    """(size, mtime_ns) of a hard-linked file, to notice a write into it after log()."""


@dataclass(frozen=True)
class CaptureFailed:
    """An artifact that could not be captured: the writer sets its record aside with `reason`."""

    source: str
    reason: str


_counter = itertools.count()


def capture(source: str, identifier: str, files_dir: str, mode: str = "auto") -> Captured:
    """Link or copy `source` (a file or directory) below `files_dir`; raises OSError on failure."""
    name = os.path.basename(identifier.rstrip("/")) or os.path.basename(source.rstrip("/"))
    incoming = os.path.join(files_dir, INCOMING)
    if not os.path.isdir(incoming):
        os.makedirs(incoming, mode=0o700, exist_ok=True)
        os.chmod(files_dir, 0o700)  # makedirs gives the parent the umask's mode
    staged = tempfile.mkdtemp(prefix=f"{next(_counter)}-", dir=incoming)
    target = os.path.join(staged, name)
    try:
        if os.path.isdir(source):
            shutil.copytree(source, target, copy_function=_copier(mode, identifier))
            stamp = None
        else:
            stamp = _copier(mode, identifier)(source, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return Captured(staged, name, source, stamp)


def place(captured: Captured, journal_dir: str, files_name: str, seq: int) -> str:
    """Move a captured artifact to ``<files_name>/<seq>/<name>``; return that relative path."""
    final = os.path.join(journal_dir, files_name, str(seq))
    if os.path.lexists(final):  # left by a process that died before committing this seq
        shutil.rmtree(final, ignore_errors=True)
    os.rename(captured.staged, final)
    relative = os.path.join(files_name, str(seq), captured.name)
    if captured.stamp is not None and _stamp(os.path.join(journal_dir, relative)) != captured.stamp:
        warnings.warn(
            f"fanlog: {captured.source!r} was written into after it was logged; the run holds a "
            "hard link to it, so it holds the new content (write a new file, or use the logger "
            "option capture='copy')",
            RuntimeWarning,
            stacklevel=2,
        )
    return relative


def _copier(mode: str, identifier: str) -> Callable[[str, str], tuple[int, int] | None]:
    def link_or_copy(source: str, target: str) -> tuple[int, int] | None:
        refuse_special(source, identifier)
        if mode == "link" or (mode == "auto" and os.stat(source).st_size >= LINK_MIN_BYTES):
            try:
                os.link(source, target)
                return _stamp(target)
            except OSError:
                pass  # another file system, protected_hardlinks, no link support: copy
        shutil.copyfile(source, target)
        return None

    return link_or_copy


def _stamp(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns
