"""One writer per journal: a lock file beside the journal, held while a logger appends to it.

``journal.sqlite.lock`` is locked with ``flock`` for the life of the writer, and the
journal's path is kept in an in-process registry as well: on NFS, ``flock`` is emulated
with POSIX locks, which never conflict inside one process. The lock file also says who
holds it (pid, host, journal mode), which readers use for their messages.

On a file system without working locks (``flock`` fails with ENOLCK, ENOSYS, ...), an
owner file created with ``O_EXCL`` takes the lock's place; a stale one (its process gone,
on this host) is taken over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

LOCK_SUFFIX = ".lock"
OWNER_SUFFIX = ".owner"
_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}

_held: dict[str, WriterLock] = {}
"""Journals this process writes, by real path."""
registry_lock = threading.RLock()  # re-entrant: exit paths may run in a signal handler


@dataclass
class WriterLock:
    """The right to append to one journal, until `release()`."""

    journal_path: str
    mode: str
    fd: int | None = None
    owner_file: str | None = None

    def release(self) -> None:
        with registry_lock:
            if _held.get(_key(self.journal_path)) is not self:
                return  # released already, or inherited through fork: not ours to release
            del _held[_key(self.journal_path)]
        if self.owner_file is not None:
            try:
                os.unlink(self.owner_file)
            except OSError:
                pass
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)  # no holder recorded any more
            except OSError:
                pass
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None


def try_acquire(journal_path: str, mode: str) -> WriterLock | None:
    """The writer lock of `journal_path`, or None when a live writer holds it."""
    key = _key(journal_path)
    with registry_lock:
        if key in _held:
            return None
        lock = _lock_file(journal_path, mode)
        if lock is not None:
            _held[key] = lock
        return lock


def holder(journal_path: str) -> dict[str, Any] | None:
    """Who writes `journal_path` now (pid, host, mode), as its lock file says; None if nobody.

    Reads the lock file without locking it. A holder on this host whose process is gone
    (``kill -9``) is not a holder.
    """
    with registry_lock:
        mine = _held.get(_key(journal_path))
    if mine is not None:
        return {"pid": os.getpid(), "host": socket.gethostname(), "mode": mine.mode}
    for suffix in (LOCK_SUFFIX, OWNER_SUFFIX):
        try:
            with open(journal_path + suffix, encoding="utf-8") as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if not text:
            continue
        try:
            info = json.loads(text)
        except ValueError:
            continue
        if isinstance(info, dict) and _alive(info):
            return info
    return None


def forget_after_fork() -> None:
    """In a forked child: drop the parent's locks without releasing them.

    The descriptors are closed (the parent keeps its own, so its flock stays), and the
    registry is emptied, so that the child can lock journals of its own.
    """
    for lock in list(_held.values()):
        if lock.fd is not None:
            try:
                os.close(lock.fd)
            except OSError:
                pass
    _held.clear()


def _lock_file(journal_path: str, mode: str) -> WriterLock | None:
    stamp = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "mode": mode})
    fd = os.open(journal_path + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as exc:
        os.close(fd)
        if exc.errno not in _NO_LOCKS:
            raise
        return _claim_owner_file(journal_path, mode, stamp)
    os.ftruncate(fd, 0)
    os.pwrite(fd, stamp.encode(), 0)
    return WriterLock(journal_path, mode, fd=fd)


def _claim_owner_file(journal_path: str, mode: str, stamp: str) -> WriterLock | None:
    """The lock where the file system has no flock: an owner file made with O_EXCL."""
    path = journal_path + OWNER_SUFFIX
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if holder_of_owner_file(path) is not None:
                return None
            try:
                os.unlink(path)  # stale: its process is gone
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(stamp)
        return WriterLock(journal_path, mode, owner_file=path)
    return None


def holder_of_owner_file(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            info = json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        return {"pid": None, "host": None}  # being written right now: treat as held
    return info if isinstance(info, dict) and _alive(info) else None


def writer_alive(pid: object, host: object) -> bool | None:
    """The one rule for "is the process that writes a journal alive?".

    True when `pid` runs on this host; False when it ran on this host and is gone (a
    ``kill -9``, an OOM kill); None when this host cannot tell (another host, no pid).
    The lock (a holder is live unless known gone), ``fanlog ls`` (``interrupted``) and
    ``fanlog sync`` (refuse to race a live writer) all decide with it.
    """
    if type(pid) is not int or pid <= 0 or host not in _host_names():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return not _is_zombie(pid)
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A process that died but was not reaped yet (its parent has not waited for it): gone,
    although the kernel still knows its pid. Where /proc is missing, it cannot tell: False."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split()[:1]
    except OSError:
        return False
    return state in ([b"Z"], [b"X"])


def _host_names() -> set[str]:
    """What this host is called in a lock file (``gethostname``) or in meta (``uname``)."""
    return {socket.gethostname(), os.uname().nodename}


def _alive(info: dict[str, Any]) -> bool:
    """A lock holder is live unless it is known to be gone."""
    return writer_alive(info.get("pid"), info.get("host")) is not False


def _key(journal_path: str) -> str:
    return os.path.realpath(journal_path)
