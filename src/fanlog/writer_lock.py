"""Moved to :mod:`fanlog.journal.lock`; this name stays until the last imports of it move."""

from fanlog.journal.lock import (  # noqa: F401
    WriterLock,
    forget_after_fork,
    holder,
    registry_lock,
    try_acquire,
    writer_alive,
)
