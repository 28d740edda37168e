"""JournalLogger: the embedded default. The journal is the store; there is nothing to deliver."""

from __future__ import annotations

from fanlog.backend import AllKinds, Backend
from fanlog.logger import TrackerLogger


class JournalBackend(Backend):
    """Accepts every kind. Its records are in the journal the moment they are committed, so
    it gets no dispatcher (``needs_delivery = False``) and no option of its own."""

    name = "journal"
    supported_kinds = AllKinds()
    needs_delivery = False


class JournalLogger(TrackerLogger):
    """Log to the local journal only (``<savedir>/runs/<run>/rank-<r>/journal.sqlite``).

    Read it back with :func:`fanlog.read_run`, the ``fanlog`` CLI, or deliver it to a
    tracker later with ``fanlog sync``.
    """

    backend_class = JournalBackend
