"""Exceptions with messages that say what was wrong and what was expected."""

from __future__ import annotations

import errno
from typing import Any, Literal

TRANSIENT: Literal["transient"] = "transient"
PERMANENT: Literal["permanent"] = "permanent"
Verdict = Literal["transient", "permanent"]


class FanlogError(Exception):
    """Base class of fanlog's own errors."""


class LoggerNotStartedError(FanlogError, RuntimeError):
    """`log()` was called before `create_logger_context()` or after `destroy_logger_context()`."""


class BackendError(FanlogError):
    """A tracker failed; raised to the caller only in strict mode."""


class BadJournalError(FanlogError, OSError):
    """A `journal.sqlite` that cannot be read as a fanlog journal (damaged, empty, not SQLite)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"fanlog: cannot read the journal {path!r}: {reason}")
        self.path = path
        self.reason = reason


class PartialDelivery(FanlogError):  # noqa: N818 - a signal, not an error
    """Raised by `Backend.write` when only the first `done` records were stored.

    The dispatcher advances its cursor by `done` and retries the rest, so that a
    batch split across several requests is never delivered twice.
    """

    def __init__(self, done: int, cause: BaseException) -> None:
        super().__init__(f"{done} records delivered before: {cause!r}")
        self.done = done
        self.cause = cause


class RecordRejected(FanlogError, ValueError):  # noqa: N818 - a verdict on one record
    """A tracker can never store this record (not "not now": never, as it is).

    A backend raises it, alone or as the cause of a :class:`PartialDelivery`, or notes it
    with :meth:`fanlog.backend.Backend.reject` and goes on with the batch. The dispatcher
    then marks the record in the journal's ``rejected`` table with `reason`, moves past
    it, and delivers the records after it; ``fanlog sync --retry-rejected`` tries again.
    `seq` names the record; without it the dispatcher finds the record by bisection.
    """

    def __init__(self, reason: str, seq: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seq = seq


def reason_of(exc: BaseException) -> str:
    """The text kept in the journal for a rejection: the message, and the error's type
    unless it is a plain RecordRejected."""
    if type(exc) is RecordRejected:
        return exc.reason
    message = exc.reason if isinstance(exc, RecordRejected) else str(exc)
    return f"{type(exc).__name__}: {message or repr(exc)}"


# Errors about the file a record names (a captured artifact that is gone, a FIFO, a
# directory where a file was expected): retrying cannot change them.
_RECORD_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.ENXIO,
        errno.ESPIPE,
    }
)
# Statuses about the tracker as a whole (credentials, a deleted run, a proxy), not the
# record: retried, so that fixing the tracker delivers everything, rather than refused.
_TRACKER_STATUSES = frozenset({401, 403, 404, 407, 408, 429})


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, by the common attribute names, else None."""
    for holder in (exc, getattr(exc, "response", None)):
        for name in ("status_code", "status", "code"):
            value = getattr(holder, name, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
    return None


def classify(exc: BaseException) -> Verdict:
    """Whether retrying `exc` can help ("transient") or the record is refused ("permanent").

    Transient: connection errors and timeouts, HTTP 5xx, 408, 429 and the statuses about
    the tracker itself (401, 403, 404, 407), OS errors such as a full disk on the tracker's
    side, and anything unknown. Permanent: :class:`RecordRejected`, other HTTP 4xx, a
    ``ValueError``/``TypeError``/``ArithmeticError`` raised for the record, and OS errors
    about the record's own file (missing, a directory, a FIFO). Backends refine this in
    :meth:`fanlog.backend.Backend.classify`.
    """
    if isinstance(exc, PartialDelivery):
        exc = exc.cause
    if isinstance(exc, RecordRejected):
        return PERMANENT
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return TRANSIENT
    status = http_status(exc)
    if status is not None:
        if status >= 500 or status in _TRACKER_STATUSES:
            return TRANSIENT
        return PERMANENT if status >= 400 else TRANSIENT
    if isinstance(exc, OSError):
        return PERMANENT if exc.errno in _RECORD_ERRNOS else TRANSIENT
    if isinstance(exc, (ValueError, TypeError, ArithmeticError)):
        return PERMANENT
    return TRANSIENT


def describe(item: Any) -> str:
    """A short description of a value for error messages (type and, if small, value)."""
    shape = getattr(item, "shape", None)
    name = f"{type(item).__module__}.{type(item).__qualname__}".removeprefix("builtins.")
    if shape is not None:
        dtype = getattr(item, "dtype", None)
        return f"{name} of shape {tuple(shape)}" + (f" and dtype {dtype}" if dtype is not None else "")
    try:
        text = repr(item)
    except Exception:  # noqa: BLE001 - e.g. an int of more than 4300 digits has no repr
        return name
    return f"{name} {text}" if len(text) <= 40 else name


def bad_item(
    kind: str, identifier: str, expected: str, item: Any, exc: type[Exception] = TypeError
) -> Exception:
    """Build the error raised by a kind normalizer for a wrong item."""
    return exc(f"log(kind={kind!r}, identifier={identifier!r}): expected {expected}, got {describe(item)}")
