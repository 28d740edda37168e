"""How fanlog tells the user something, in one place.

The rule: ``warnings.warn`` on the caller's thread, for what the caller can fix (a bad
option, a tracker that refuses records); ``logging.getLogger(__name__)`` on background
threads. A warning raised on a background thread is attributed to the thread's code,
escapes ``warnings.catch_warnings`` (which is not thread-safe), and under ``-W error``
becomes an exception that kills the thread. Background threads that have something for
the user hand it to the caller's thread instead (see :meth:`fanlog.run.Run.notify`).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Hashable, Iterator

_seen: set[Hashable] = set()
_lock = threading.Lock()
_local = threading.local()


def warn_once(
    message: str,
    category: type[Warning] = RuntimeWarning,
    *,
    key: Hashable | None = None,
    seen: set[Hashable] | None = None,
    stacklevel: int = 1,
) -> bool:
    """``warnings.warn(message, category)`` unless `key` (default: the message) was warned about
    already in `seen` (default: once per process). Returns True if it warned.

    `stacklevel` counts as for ``warnings.warn`` called where ``warn_once`` is called.
    """
    with _lock:
        registry = _seen if seen is None else seen
        marker = message if key is None else key
        if marker in registry:
            return False
        registry.add(marker)
    warnings.warn(message, category, stacklevel=stacklevel + 1)
    return True


@contextlib.contextmanager
def implied_kinds() -> Iterator[None]:
    """Records logged inside this block come from an integration (a Lightning checkpoint or
    graph), not from a call the user wrote: a tracker that cannot take their kind says so
    once per run at debug level instead of warning. The user's own call of that kind still warns."""
    depth = getattr(_local, "implied", 0)
    _local.implied = depth + 1
    try:
        yield
    finally:
        _local.implied = depth


def implied() -> bool:
    """True inside :func:`implied_kinds` on this thread."""
    return bool(getattr(_local, "implied", 0))
