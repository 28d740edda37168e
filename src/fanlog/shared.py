"""What a run shares with the processes it forks (persistent DataLoader workers, Pool).

A child forked once and kept (``DataLoader(persistent_workers=True)``) would otherwise log
every record with the epoch of the moment it was forked, and every worker would count the
same automatic steps. :class:`SharedState` is one anonymous shared memory page, made with
the run (before any fork), that holds:

- the parent's epoch, written at each ``end_epoch()``; a child reads it at each record;
- a draw counter: a child's automatic step of a key is the key's next step at the fork
  plus a number drawn from it, so workers never repeat a step (steps have gaps instead).
  Draws are serialised with ``flock`` on a lock file each child opens itself (released
  if a child dies holding it, unlike a semaphore).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from collections.abc import Iterator

_EPOCH = 0  # offsets of the two int64 fields
_DRAW = 8
_INT = struct.Struct("<q")


class SharedState:
    """The parent's epoch and the children's step draws, in memory fork shares."""

    def __init__(self, lock_path: str) -> None:
        self._memory = mmap.mmap(-1, 2 * _INT.size)  # anonymous and shared: seen across fork
        self._lock_path = lock_path
        self._lock_fd: int | None = None
        self._lock_pid = 0

    @property
    def epoch(self) -> int:
        return int(_INT.unpack_from(self._memory, _EPOCH)[0])

    def set_epoch(self, epoch: int) -> None:
        _INT.pack_into(self._memory, _EPOCH, epoch)

    def draw(self) -> int:
        """The next draw number, unique among every process of the run."""
        fd = self._own_lock()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            (number,) = _INT.unpack_from(self._memory, _DRAW)
            _INT.pack_into(self._memory, _DRAW, number + 1)
            return int(number)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _own_lock(self) -> int:
        """This process's own descriptor of the lock file (an inherited one would share the
        parent's lock instead of excluding it)."""
        if self._lock_fd is None or self._lock_pid != os.getpid():
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_pid = os.getpid()
        return self._lock_fd


class DrawnSteps(dict[str, Iterator[int]]):
    """A forked child's automatic step counters (``Run.counters``): each key's next step at
    the fork, plus a shared draw."""

    def __init__(self, shared: SharedState, bases: dict[str, int], given: dict[str, int]) -> None:
        super().__init__()
        self._shared = shared
        self._bases = bases
        self._given = given
        """The run's steps given explicitly (``Run.steps``): a given step moves the base."""

    def get(self, key: str, default: object = None) -> Iterator[int]:
        return self._drawn(key)

    def __bool__(self) -> bool:
        return True

    def _drawn(self, key: str) -> Iterator[int]:
        while True:
            yield max(self._bases.get(key, 0), self._given.get(key, 0)) + self._shared.draw()
