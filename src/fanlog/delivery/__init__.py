"""Getting journaled records to the trackers.

:mod:`fanlog.delivery.dispatch` hands one batch to one backend (live delivery and sync both
use it); :mod:`fanlog.delivery.sync` is ``fanlog sync``, which delivers what a journal holds
and a tracker has not received (the function is also :func:`fanlog.sync`).
"""

from __future__ import annotations

from fanlog.delivery.dispatch import BatchDelivery, CallWatch, Rejected, Stored

__all__ = ["BatchDelivery", "CallWatch", "Rejected", "Stored"]
