"""Exit paths: normal exit closes runs as finished, an uncaught exception as failed, Ctrl-C and
SIGTERM as killed; and what a signal does while a logger is closing.

SLURM and torchrun send SIGTERM before SIGKILL. The handler closes every live run within a
grace period (passed to the close, never written into the user's settings), marks runs
KILLED, then lets the previous handler (or the default action) end the process, so the
exit code stays conventional (143).

Without ``start_logging()`` (create, loop, no ``with``), the ``atexit`` closer learns how
the program ended from a chained ``sys.excepthook``: an uncaught exception closes the run
as failed, an uncaught KeyboardInterrupt as killed.

While ``destroy_logger_context()`` runs on the main thread, Ctrl-C no longer interrupts
the journal drain: it only cuts the wait for trackers short, and KeyboardInterrupt is
raised once the journal is closed. A SIGTERM then makes the close end as killed within
the grace period, after which the process ends as SIGTERM says.

Only the process that started a run closes it: a forked child's exit never touches
its parent's runs (see :mod:`fanlog.forking`).

This module knows runs only through the small protocols below, so it imports neither the
logger nor the run (:class:`fanlog.run.Run` implements :class:`Closable`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, Protocol

from fanlog.record import RunStatus


class Closable(Protocol):
    """A live run, as exit handling sees it."""

    @property
    def owner_pid(self) -> int:
        """The process that started the run: the only one that closes it."""
        ...

    def close_for_exit(self, status: RunStatus, timeout: float | None) -> None:
        """Close with `status` within `timeout` seconds (None: the run's own close_timeout)."""
        ...


class Interruptible(Protocol):
    """A pipeline being closed, whose close a signal can cut short."""

    closed: threading.Event

    def interrupt(self, status: RunStatus | None = None, within: float = 0.0) -> None: ...


SIGTERM_GRACE_SECONDS = float(os.environ.get("FANLOG_SIGTERM_GRACE", "10"))
"""Longest the SIGTERM handler spends flushing before the process goes down."""
CLOSE_MARGIN_SECONDS = 1.0
"""Part of the grace kept for closing the journal once the trackers are given up."""

_live: list[Closable] = []
_closing: set[Interruptible] = set()
"""Pipelines being closed right now (by destroy on any thread)."""
_lock = threading.RLock()  # re-entered by the SIGTERM handler if it interrupts a holder
_installed = False
_previous: Any = None
_previous_excepthook: Any = None
_uncaught: RunStatus | None = None
"""How the program is ending, as the excepthook saw it (None: normally)."""


def register(run: Closable) -> None:
    """Close `run` at interpreter exit and on SIGTERM, unless it is closed before."""
    global _installed
    with _lock:
        _live.append(run)
        if _installed:
            return
        _installed = True
    atexit.register(_close_at_exit)
    _install_excepthook()
    if threading.current_thread() is threading.main_thread():
        _install_sigterm()


def unregister(run: Closable) -> None:
    with _lock:
        if run in _live:
            _live.remove(run)


def forget_after_fork() -> list[Closable]:
    """In a forked child: the parent's runs, no longer ours to close at exit or SIGTERM."""
    inherited = list(_live)
    _live.clear()
    _closing.clear()
    return inherited


def _install_sigterm() -> None:
    global _previous
    try:
        _previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread of the main interpreter
        _previous = None


def _install_excepthook() -> None:
    global _previous_excepthook
    _previous_excepthook = sys.excepthook
    sys.excepthook = _excepthook


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    """Remember how the program ends (an interactive prompt goes on: nothing ends there)."""
    global _uncaught
    if not hasattr(sys, "ps1"):
        _uncaught = RunStatus.KILLED if issubclass(exc_type, KeyboardInterrupt) else RunStatus.FAILED
    previous = _previous_excepthook if _previous_excepthook is not None else sys.__excepthook__
    previous(exc_type, exc, tb)


def _close_at_exit() -> None:
    _close_all(_uncaught or RunStatus.FINISHED, None)


def _close_all(status: RunStatus, timeout: float | None) -> None:
    with _lock:
        runs = list(reversed(_live))
    pid = os.getpid()
    for run in runs:
        if run.owner_pid != pid:  # a fork the hooks did not see
            continue
        try:
            run.close_for_exit(status, timeout)
        except Exception:  # noqa: BLE001 - exit path: never raise here
            pass


def _on_sigterm(signum: int, frame: Any) -> None:
    with _lock:
        closing = list(_closing)
    for pipeline in closing:  # a destroy on another thread: make it end as killed, in time
        pipeline.interrupt(RunStatus.KILLED, _tracker_time())
    _close_all(RunStatus.KILLED, SIGTERM_GRACE_SECONDS)
    for pipeline in closing:
        pipeline.closed.wait(SIGTERM_GRACE_SECONDS)
    previous = _previous
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _tracker_time() -> float:
    return max(0.0, SIGTERM_GRACE_SECONDS - CLOSE_MARGIN_SECONDS)


@contextlib.contextmanager
def protected_close(pipeline: Interruptible) -> Iterator[None]:
    """Around `pipeline.close()`: Ctrl-C and SIGTERM change how the close ends, never cut the
    journal drain short (except SIGTERM's grace period)."""
    with _lock:
        _closing.add(pipeline)
    try:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread; _on_sigterm sees this close in _closing
            return
        with _deferred_signals(pipeline):
            yield
    finally:
        with _lock:
            _closing.discard(pipeline)


@contextlib.contextmanager
def _deferred_signals(pipeline: Interruptible) -> Iterator[None]:
    received: list[int] = []

    def on_interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        pipeline.interrupt()  # stop waiting for trackers; the journal drain goes on

    def on_terminate(signum: int, frame: Any) -> None:
        received.append(signum)
        pipeline.interrupt(RunStatus.KILLED, _tracker_time())

    replaced: dict[int, Any] = {}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        replaced[signal.SIGINT] = signal.signal(signal.SIGINT, on_interrupt)
    if signal.getsignal(signal.SIGTERM) in (_on_sigterm, signal.SIG_DFL):
        replaced[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_terminate)
    try:
        yield
    finally:
        for signum, handler in replaced.items():
            signal.signal(signum, handler)
    if signal.SIGTERM in received:
        os.kill(os.getpid(), signal.SIGTERM)  # what SIGTERM does now that the run is closed
    elif signal.SIGINT in received:
        raise KeyboardInterrupt
