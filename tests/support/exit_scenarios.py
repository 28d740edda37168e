"""Exit scenarios, run as `python exit_scenarios.py SCENARIO SAVEDIR` by tests/test_signals.py.

Each scenario logs `RECORDS` records under the run id SCENARIO, prints "ready" once they are
all accepted, and then waits for the test's signal (or ends by itself). Lines starting with
"said" report what the program saw (a value, an exception) for the test to check.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
from typing import Any

RECORDS = 20_000
stop = threading.Event()


def say(*words: object) -> None:
    print("said", *words, flush=True)


def ready() -> None:
    print("ready", flush=True)


def burst(logger: Any, key: str = "loss") -> None:
    for i in range(RECORDS):
        logger.log(float(i), key, step=i)


def journal_logger(savedir: str, job_id: str) -> Any:
    from fanlog import JournalLogger

    return JournalLogger(savedir=savedir, log_freq="batch", job_id=job_id)


def wait_for_signal() -> None:
    """Sleep in short steps (so Python runs signal handlers) until the test's signal ends us."""
    while not stop.is_set():
        time.sleep(0.01)


# ----------------------------------------------------------------------------- the first logger on a thread
def thread_logger(scenario: str, savedir: str) -> None:
    """A trainer thread starts the process's first logger (Ray, uvicorn, a GUI)."""
    imported_here = scenario == "import-in-thread"
    done = threading.Event()
    started: list[Any] = []

    def train() -> None:
        if imported_here:
            importlib.import_module("fanlog.backends.journal")  # fanlog imported off the main thread
        logger = journal_logger(savedir, scenario)
        logger.create_logger_context(rank=0)
        started.append(logger)
        burst(logger)
        done.set()
        time.sleep(600)

    if not imported_here:
        importlib.import_module("fanlog.backends.journal")  # the usual top-of-script import
    threading.Thread(target=train, daemon=True).start()
    done.wait()
    if scenario == "later-main-logger":  # a second logger, on the main thread, later
        main = journal_logger(savedir, scenario + "-main")
        main.create_logger_context(rank=0)
        for i in range(10):
            main.log(float(i), "eval", step=i)
    if scenario == "import-in-thread":  # the main thread's first fanlog call installs the handlers
        started[0].flush()
    ready()
    wait_for_signal()


# ----------------------------------------------------------------------------- a handler of the user's
def user_handler(scenario: str, savedir: str) -> None:
    """The graceful pre-emption pattern: SIGTERM sets a flag, the loop finishes its step,
    logs a last metric (a checkpoint in real life) and the program ends."""
    order, action = scenario.split("-", 1)  # before-flag, after-flag, before-exit, after-chain, ...

    def handler(signum: int, frame: Any) -> None:
        stop.set()
        if action == "exit":
            sys.exit(3)
        if action == "chain":
            chained(signum, frame)  # the handler signal.signal() gave back: fanlog's

    if order == "first":  # before fanlog is even imported
        chained = signal.signal(signal.SIGTERM, handler)
    logger = journal_logger(savedir, scenario)
    if order == "before":  # after the import, before the run starts
        chained = signal.signal(signal.SIGTERM, handler)
    with logger.start_logging(rank=0):
        if order == "after":  # while the run is live
            chained = signal.signal(signal.SIGTERM, handler)
        burst(logger)
        ready()
        step = RECORDS
        while not stop.is_set():
            logger.log(float(step), "loss", step=step)
            step += 1
            time.sleep(0.001)
        logger.log(123.0, "final/val_loss", step=0)
        say("steps", step)
    say("closed", logger.journal_path)


# ----------------------------------------------------------------------------- how the program ends
def ending(scenario: str, savedir: str) -> None:
    """The program ends in one of the ways users' programs do; the journal says how."""
    style, how = scenario.split(":", 1)
    logger = journal_logger(savedir, scenario.replace(":", "-"))
    if how == "ctrl-c-in-destroy":  # with a tracker that is down, so that destroy waits for it
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from core_backends import RecordingBackend, RecordingLogger
        from fanlog import LoggersCollection

        dead = RecordingLogger(savedir=savedir, backend=RecordingBackend(always_fail=True))
        logger = LoggersCollection([logger, dead], job_id=logger.job_id, close_timeout=120, down_after=120)
    if style == "with":
        with logger.start_logging(rank=0):
            burst(logger)
            end_like(how)
        return
    logger.create_logger_context(rank=0)
    burst(logger)
    if how == "ctrl-c-in-destroy":
        ready()
        logger.destroy_logger_context()  # the test's SIGINT lands during the close
        say("destroy returned")
        return
    end_like(how)


def end_like(how: str) -> None:
    if how == "exit-0":
        sys.exit(0)
    if how == "exit-none":
        sys.exit()
    if how == "exit-3":
        sys.exit(3)
    if how == "exit-text":
        sys.exit("fatal: bad config")
    if how == "rich-traceback":
        import rich.traceback

        rich.traceback.install()
        raise RuntimeError("crash after rich.traceback.install()")
    if how == "own-excepthook":
        sys.excepthook = lambda *exc: print("my hook", file=sys.stderr)
        raise RuntimeError("crash under the user's excepthook")
    if how == "own-excepthook-ctrl-c":
        sys.excepthook = lambda *exc: None
        raise KeyboardInterrupt
    if how == "crash":
        raise RuntimeError("crash")
    if how == "normal":
        return
    raise AssertionError(how)


# ----------------------------------------------------------------------------- other signals
def wait_for(scenario: str, savedir: str) -> None:
    """Log, then wait for the test's signal."""
    logger = journal_logger(savedir, scenario)
    logger.create_logger_context(rank=0)
    burst(logger)
    ready()
    wait_for_signal()  # SIGUSR1 must not end this: the test reads the journal, then SIGTERMs


def main() -> None:
    scenario, savedir = sys.argv[1], sys.argv[2]
    if scenario in ("import-on-main", "later-main-logger", "import-in-thread"):
        thread_logger(scenario, savedir)
    elif scenario.split("-")[0] in ("first", "before", "after"):
        user_handler(scenario, savedir)
    elif ":" in scenario:
        ending(scenario, savedir)
    else:
        if scenario == "nohup":
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` leaves it
        wait_for(scenario, savedir)


if __name__ == "__main__":
    main()
