"""Exit paths: normal interpreter exit closes runs as finished, SIGTERM as killed.

SLURM and torchrun send SIGTERM before SIGKILL. The handler flushes every live
logger within a grace period, marks runs KILLED, then lets the previous handler
(or the default action) end the process, so the exit code stays conventional (143).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

from fanlog.record import RunStatus

if TYPE_CHECKING:
    from fanlog.logger import Logger

SIGTERM_GRACE_SECONDS = float(os.environ.get("FANLOG_SIGTERM_GRACE", "10"))
"""Longest the SIGTERM handler spends flushing before the process goes down."""

_live: list[Logger] = []
_lock = threading.Lock()
_installed = False
_previous: Any = None


def register(logger: Logger) -> None:
    global _installed
    with _lock:
        _live.append(logger)
        if _installed:
            return
        _installed = True
    atexit.register(_close_all, RunStatus.FINISHED, None)
    if threading.current_thread() is threading.main_thread():
        _install_sigterm()


def unregister(logger: Logger) -> None:
    with _lock:
        if logger in _live:
            _live.remove(logger)


def _install_sigterm() -> None:
    global _previous
    try:
        _previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread of the main interpreter
        _previous = None


def _close_all(status: RunStatus, timeout: float | None) -> None:
    with _lock:
        loggers = list(reversed(_live))
    for logger in loggers:
        if timeout is not None:
            logger.settings.close_timeout = min(logger.settings.close_timeout, timeout)
        try:
            logger.destroy_logger_context(status)
        except Exception:  # noqa: BLE001 - exit path: never raise here
            pass


def _on_sigterm(signum: int, frame: Any) -> None:
    _close_all(RunStatus.KILLED, SIGTERM_GRACE_SECONDS)
    previous = _previous
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
