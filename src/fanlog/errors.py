"""Exceptions with messages that say what was wrong and what was expected."""

from __future__ import annotations

from typing import Any


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
    return exc(
        f"log(kind={kind!r}, identifier={identifier!r}): expected {expected}, "
        f"got {describe(item)}"
    )
