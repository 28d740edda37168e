"""Moved to :mod:`fanlog.journal.capture`; this name stays until the last imports of it move."""

from fanlog.journal.capture import (  # noqa: F401
    CAPTURE_MODES,
    LINK_MIN_BYTES,
    Captured,
    CaptureFailed,
    capture,
    place,
    refuse_special,
)
