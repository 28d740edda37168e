"""What both Hugging Face integrations share: the logger from a config, logging values, exit status.

A Trainer callback or an Accelerate tracker never sees the exception that stops training,
and fanlog closes the runs still open at interpreter exit as *finished*. ``sys.excepthook``
runs for an uncaught exception before that exit handler, so the integrations register the
runs they opened with :func:`close_on_uncaught_exception`: such an exception closes them
*failed*, or *killed* for Ctrl-C. SIGTERM is fanlog's own: runs close *killed*.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from types import ModuleType, TracebackType
from typing import Any, TypeAlias

from fanlog import Logger, RunStatus, from_config

LoggerSource: TypeAlias = Logger | str | os.PathLike[str] | Mapping[str, Any] | Sequence[Any] | None
"""A fanlog logger, or a config for :func:`fanlog.from_config` (None: the ``FANLOG_CONFIG`` file)."""


def import_framework(module: str, extra: str) -> ModuleType:
    """Import a framework, or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is not installed; install it with: pip install 'fanlog[{extra}]' ({exc})"
        ) from exc


def as_logger(source: Any, owner: str) -> Logger:
    """`source` itself if it is a fanlog logger, else the logger its config describes."""
    if isinstance(source, Logger):
        return source
    if source is None or isinstance(source, (str, os.PathLike, Mapping, list, tuple)):
        return from_config(source)
    raise TypeError(
        f"{owner} expects a fanlog Logger, a config path, a dict or a list (or None for "
        f"FANLOG_CONFIG); got {type(source).__name__}"
    )


def log_values(
    logger: Logger, values: Mapping[str, Any], step: int | None, owner: str, warned: set[str], **options: Any
) -> None:
    """Log each value at `step`: a str as text, anything else as a metric.

    A value fanlog refuses (a list, a complex number, a tensor of several elements) is
    skipped with one warning per key, as the frameworks' own trackers skip what they cannot
    store: one odd entry in a log dict never stops training.
    """
    for key, value in values.items():
        kind = "text" if isinstance(value, str) else "metric"
        try:
            logger.log(value, key, kind=kind, step=step, **options)
        except (TypeError, ValueError) as exc:
            if key not in warned:
                warned.add(key)
                warnings.warn(f"{owner}: {key!r} is not logged: {exc}", RuntimeWarning, stacklevel=3)


# ---------------------------------------------------------------------- exit status
_watched: list[Logger] = []
_lock = threading.Lock()
_previous_hook: Any = None


def close_on_uncaught_exception(logger: Logger) -> None:
    """Close `logger`'s run as failed (killed for Ctrl-C) if an exception ends the program."""
    global _previous_hook
    with _lock:
        if logger not in _watched:
            _watched.append(logger)
        if _previous_hook is None:
            _previous_hook = sys.excepthook
            sys.excepthook = _on_uncaught_exception


def forget(logger: Logger) -> None:
    """`logger`'s run was closed by its integration: nothing to do for it at exit."""
    with _lock:
        if logger in _watched:
            _watched.remove(logger)


def _on_uncaught_exception(
    exc_type: type[BaseException], exc: BaseException, traceback: TracebackType | None
) -> None:
    status = RunStatus.KILLED if issubclass(exc_type, KeyboardInterrupt) else RunStatus.FAILED
    with _lock:
        loggers = list(reversed(_watched))
        _watched.clear()
    for logger in loggers:
        try:
            logger.destroy_logger_context(status)
        except Exception:  # noqa: BLE001 - the program is going down: report its own error
            pass
    (_previous_hook or sys.__excepthook__)(exc_type, exc, traceback)
