"""Exit paths: how a run ends when the program ends, and what signals do to live runs.

One rule for signals: **while no run is live, every signal does what it would without
fanlog.** While runs are live:

- SIGTERM (SLURM, torchrun, ``docker stop``) and SIGHUP (a closed terminal or ssh session)
  close every live run as killed within a grace period (passed to the close, never written
  into the user's settings), then the default action ends the process (exit code 143 or 129).
- A handler of the user's own, installed before fanlog's, is called **first**, and decides:
  if it returns (the graceful "finish the step, checkpoint, log the last metric" pattern),
  the runs stay open and close when the program ends, with the status it ends with; if it
  raises (``sys.exit()``), the runs close as killed as the program unwinds. A handler
  installed after fanlog's replaces it; chaining to fanlog's (the handler that
  ``signal.signal`` returned) closes the runs as above.
- SIGUSR1 (SLURM's ``--signal=USR1@...`` pre-warning) never terminates: the journal is made
  durable (the writer's backlog committed, within the grace), then the user's handler runs.

The handlers are installed from the main thread (Python allows no other): when this module
is imported there, else at the first ``create_logger_context()``, ``flush()`` or destroy
made there. A program whose main thread never runs fanlog code keeps the default actions.
A disposition of SIG_IGN (``nohup``) or one set from C code is left alone.

How the program ends decides the status of the runs still open at exit (``atexit``): an
uncaught exception closes them failed, an uncaught KeyboardInterrupt killed (read from
``sys.last_value``, which the interpreter sets whatever ``sys.excepthook`` is in place),
``sys.exit(n)`` with n other than 0 or None failed, anything else finished.

While ``destroy_logger_context()`` runs on the main thread, signals are deferred from its
first line: Ctrl-C no longer interrupts the journal drain, it only cuts the wait for
trackers short and makes the run end as killed, and KeyboardInterrupt is raised once the
journal is closed. A SIGTERM then makes the close end as killed within the grace period,
after which the signal is sent again.

Only the process that started a run closes it: a forked child's exit never touches its
parent's runs (see :mod:`fanlog.forking`). This module knows runs only through the small
protocols below, so it imports neither the logger nor the run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
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

    def make_durable(self, timeout: float) -> None:
        """Commit what was logged so far to the journal, within `timeout` seconds."""
        ...


class Interruptible(Protocol):
    """A pipeline being closed, whose close a signal can cut short."""

    closed: threading.Event

    def interrupt(
        self, status: RunStatus | None = None, within: float = 0.0, drain: bool = False
    ) -> None: ...


SIGTERM_GRACE_SECONDS = float(os.environ.get("FANLOG_SIGTERM_GRACE", "10"))
"""Longest a terminating signal's handler spends flushing before the process goes down."""
CLOSE_MARGIN_SECONDS = 1.0
"""Part of the grace kept for closing the journal once the trackers are given up."""
TERMINATING: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)
"""Signals that close live runs as killed before the default action ends the process."""
PRE_WARNING: tuple[signal.Signals, ...] = (signal.SIGUSR1,)
"""Signals that only make the journal durable: a warning that the end is near."""

_live: list[Closable] = []
_closing: set[Interruptible] = set()
"""Pipelines being closed right now (by destroy on any thread)."""
_lock = threading.RLock()  # re-entered by a signal handler if it interrupts a holder
_registered = False
_tried_signals = False
_previous: dict[int, Any] = {}
"""The disposition each handled signal had before fanlog's handler."""
_terminating = False
"""Set once SIGTERM or SIGHUP reached a live run: every later close is bounded by the grace
(the job is on borrowed time: SIGKILL follows)."""
_by_signal = False
"""Set when a user's signal handler raised: the exception that unwinds the program was
caused by SIGTERM or SIGHUP, so the runs close as killed."""
_in_user_handler: set[int] = set()
"""Signals whose user handler is running (it may chain back to fanlog's)."""
_deferring = False
"""Set while starting() holds signals back on the main thread."""
_NO_EXIT = object()
_exit_request: Any = _NO_EXIT
"""The argument of the last ``sys.exit()`` call (_NO_EXIT while there was none)."""


def register(run: Closable) -> None:
    """Close `run` at interpreter exit and on SIGTERM/SIGHUP, unless it is closed before."""
    global _registered
    with _lock:
        _live.append(run)
        first = not _registered
        _registered = True
    if first:
        atexit.register(_close_at_exit)
        _watch_sys_exit()
    if not _deferring:  # else starting() installs them once it restores the handlers
        install_signal_handlers(chain_new=True)


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


def install_signal_handlers(chain_new: bool = False) -> None:
    """Install fanlog's handlers if called on the main thread (a no-op elsewhere, so every
    fanlog entry point may call it): once, or with `chain_new` (a run starts) again over a
    handler set since, which then becomes the user's handler that fanlog calls first."""
    global _tried_signals
    if threading.current_thread() is not threading.main_thread():
        return
    if _tried_signals and not chain_new:
        return
    _tried_signals = True
    for signum in (*TERMINATING, *PRE_WARNING):
        current = signal.getsignal(signum)
        if current is _on_signal or current is signal.SIG_IGN or current is None:
            continue  # ours already; nohup; or a handler set from C, which Python cannot call
        try:
            signal.signal(signum, _on_signal)
        except ValueError:  # not the main interpreter
            return
        _previous[signum] = current


def close_limit(timeout: float | None) -> float | None:
    """The time a close may take: `timeout`, bounded by the grace once a terminating signal
    arrived (a handler of the user's let the program go on, or made it exit)."""
    if not _terminating:
        return timeout
    return SIGTERM_GRACE_SECONDS if timeout is None else min(timeout, SIGTERM_GRACE_SECONDS)


def exit_status(exc: BaseException | None) -> RunStatus:
    """The status a run ends with when `exc` ends the program (None: it ends normally)."""
    if exc is None:
        return RunStatus.FINISHED
    if isinstance(exc, KeyboardInterrupt) or _by_signal:
        return RunStatus.KILLED
    if isinstance(exc, SystemExit):
        return RunStatus.FINISHED if exc.code in (0, None) else RunStatus.FAILED
    return RunStatus.FAILED


# ---------------------------------------------------------------------------- exit
def _watch_sys_exit() -> None:
    """Note the argument of ``sys.exit()``: the atexit closer cannot see it otherwise."""
    original: Callable[..., Any] = sys.exit
    if getattr(original, "__fanlog__", False):
        return

    def exit(status: Any = None) -> None:  # noqa: A001 - it is sys.exit
        global _exit_request
        _exit_request = status
        original(status)

    exit.__fanlog__ = True  # type: ignore[attr-defined]
    exit.__wrapped__ = original  # type: ignore[attr-defined]
    exit.__doc__ = original.__doc__
    sys.exit = exit  # type: ignore[assignment]


def _status_at_exit() -> RunStatus:
    """How the program is ending, as far as an atexit handler can tell."""
    if hasattr(sys, "ps1"):  # an interactive prompt: nothing ends there
        return RunStatus.FINISHED
    uncaught = getattr(sys, "last_value", None)  # set before any sys.excepthook runs
    if uncaught is not None:
        return exit_status(uncaught)
    if _exit_request is not _NO_EXIT:
        return exit_status(SystemExit(_exit_request))
    return RunStatus.KILLED if _by_signal else RunStatus.FINISHED


def _close_at_exit() -> None:
    _close_all(_status_at_exit(), None)


def _owned_runs() -> list[Closable]:
    with _lock:
        runs = list(reversed(_live))
    pid = os.getpid()
    return [run for run in runs if run.owner_pid == pid]  # not a fork the hooks did not see


def _close_all(status: RunStatus, timeout: float | None) -> None:
    for run in _owned_runs():
        try:
            run.close_for_exit(status, timeout)
        except Exception:  # noqa: BLE001 - exit path: never raise here
            pass


# ---------------------------------------------------------------------------- signals
def _on_signal(signum: int, frame: Any) -> None:
    """fanlog's handler of SIGTERM, SIGHUP and SIGUSR1 (see the module doc)."""
    global _terminating
    previous = _previous.get(signum, signal.SIG_DFL)
    if signum in _in_user_handler:  # the user's handler chained back here: the default action
        previous = signal.SIG_DFL
    with _lock:
        closing = list(_closing)
    runs = _owned_runs()
    if not runs and not closing:  # nothing of fanlog's is live: as if fanlog were not here
        _pass_on(signum, frame, previous)
        return
    if signum in PRE_WARNING:
        for run in runs:
            with contextlib.suppress(Exception):
                run.make_durable(SIGTERM_GRACE_SECONDS)
        if callable(previous):
            previous(signum, frame)
        return
    _terminating = True
    if callable(previous):  # the user's own handler decides what happens next
        _call_user_handler(previous, signum, frame)
        return
    for pipeline in closing:  # a destroy on another thread: make it end as killed, in time
        pipeline.interrupt(RunStatus.KILLED, _tracker_time(), drain=True)
    _close_all(RunStatus.KILLED, SIGTERM_GRACE_SECONDS)
    for pipeline in closing:
        pipeline.closed.wait(SIGTERM_GRACE_SECONDS)
    _pass_on(signum, frame, previous)


def _call_user_handler(handler: Callable[[int, Any], Any], signum: int, frame: Any) -> None:
    """Call the user's handler. If it chains back to fanlog's (the handler it replaced when it
    was installed), fanlog's acts as for the default action: close the runs, end the process."""
    global _by_signal
    _in_user_handler.add(signum)
    try:
        handler(signum, frame)
    except BaseException:
        _by_signal = True  # the program unwinds because of the signal: its runs are killed
        raise
    finally:
        _in_user_handler.discard(signum)


def _pass_on(signum: int, frame: Any, previous: Any) -> None:
    """Do what the signal would have done without fanlog."""
    if callable(previous):
        previous(signum, frame)
        return
    if previous is signal.SIG_IGN:
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _tracker_time() -> float:
    return max(0.0, SIGTERM_GRACE_SECONDS - CLOSE_MARGIN_SECONDS)


@contextlib.contextmanager
def protected_close(pipeline: Interruptible) -> Iterator[None]:
    """Around a whole destroy: Ctrl-C and SIGTERM change how the close ends, never cut the
    journal drain short (except SIGTERM's grace period)."""
    install_signal_handlers()
    with _lock:
        _closing.add(pipeline)
    try:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread; _on_signal sees this close in _closing
            return
        with _deferred_signals(pipeline):
            yield
    finally:
        with _lock:
            _closing.discard(pipeline)


@contextlib.contextmanager
def starting() -> Iterator[None]:
    """Around opening a run (a few milliseconds): every signal with a Python handler (Ctrl-C,
    SIGTERM, a handler of the user's) is deferred, then handled once the run is complete and
    registered, so that what it does (raise KeyboardInterrupt, close the runs) finds a whole
    run to close, never half a journal, a lock or a thread nobody owns."""
    global _deferring
    if threading.current_thread() is not threading.main_thread() or _deferring:
        yield
        return
    received: list[int] = []

    def defer(signum: int, frame: Any) -> None:
        if signum not in received:
            received.append(signum)

    originals = _python_handlers()  # taken before any is replaced: restored whatever happens
    try:
        _deferring = True
        for signum in originals:
            signal.signal(signum, defer)
        yield
    finally:
        _deferring = False
        _restore(list(originals.items()))
    install_signal_handlers(chain_new=True)  # what register() left to this moment
    for signum in received:  # as they would have run; one that raises ends the start
        handler = signal.getsignal(signum)
        if callable(handler):
            handler(signum, sys._getframe())


def _python_handlers() -> dict[int, Any]:
    """The signals whose disposition is a Python callable (those Python runs on this thread)."""
    handlers: dict[int, Any] = {}
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):  # signals Python cannot query
            continue
        if callable(handler):
            handlers[signum] = handler
    return handlers


def _restore(handlers: list[tuple[int, Any]]) -> None:
    """Put `handlers` back; one that runs (and raises) meanwhile stops none of the others."""
    if not handlers:
        return
    (signum, handler), rest = handlers[0], handlers[1:]
    try:
        signal.signal(signum, handler)
    finally:
        _restore(rest)


@contextlib.contextmanager
def _deferred_signals(pipeline: Interruptible) -> Iterator[None]:
    received: list[int] = []

    def on_interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        pipeline.interrupt(RunStatus.KILLED)  # stop waiting for trackers; the drain goes on

    def on_terminate(signum: int, frame: Any) -> None:
        received.append(signum)
        if not callable(_previous.get(signum)):  # a handler of the user's decides after the close
            pipeline.interrupt(RunStatus.KILLED, _tracker_time(), drain=True)

    replaced: dict[int, Any] = {}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        replaced[signal.SIGINT] = signal.signal(signal.SIGINT, on_interrupt)
    for signum in TERMINATING:
        if signal.getsignal(signum) in (_on_signal, signal.SIG_DFL):
            replaced[signum] = signal.signal(signum, on_terminate)
    try:
        yield
    finally:
        for number, handler in replaced.items():
            signal.signal(number, handler)
    terminated = [s for s in received if s in TERMINATING]
    if terminated:
        os.kill(os.getpid(), terminated[0])  # what the signal does now that the run is closed
    elif signal.SIGINT in received:
        raise KeyboardInterrupt


install_signal_handlers()  # at import, on the main thread: then a first logger on any thread is covered
