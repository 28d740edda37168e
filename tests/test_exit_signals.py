"""Exit paths with real signals: Ctrl-C twice during destroy, SIGTERM during destroy, and the
itwinai style (create, loop, no `with`) ending by exception, Ctrl-C or normally; plus automatic
steps from several threads.

Each case is a real subprocess sent real signals; the journal is read back with plain SQLite
and every record is counted.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from fanlog import JournalLogger, read_run
from support.journals import count, journals_of, meta

pytestmark = pytest.mark.slow
TESTS = str(Path(__file__).parent)

BURST = textwrap.dedent(
    """
    import sys, time
    from fanlog import JournalLogger
    from fanlog.kinds import Kind, register_kind

    def slow(value):  # keeps the writer busy, so that destroy has a long drain ahead of it
        time.sleep(0.5)
        return value

    register_kind(Kind("slow", lambda item, key: item, "json", finalize=slow))
    style, savedir = sys.argv[1], sys.argv[2]
    logger = JournalLogger(savedir=savedir, log_freq="batch", job_id="burst", max_pending=1_000_000)

    def burst():
        for i in range(6):
            logger.log(i, f"slow/{i}", kind="slow")
        for i in range(300_000):
            logger.log(float(i), "loss", step=i)
        print("burst", logger.dropped, flush=True)
        time.sleep(600)  # the first Ctrl-C lands here

    if style == "with":
        with logger.start_logging(rank=0):
            burst()
    else:  # itwinai style: no `with`; the atexit closer does the drain
        logger.create_logger_context(rank=0)
        burst()
    """
)


@pytest.mark.parametrize("style", ["with", "no-with"])
def test_a_second_ctrl_c_during_destroy_loses_nothing(tmp_path: Path, style: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", BURST, style, str(tmp_path / "sd")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.split() == ["burst", "0"], child.stderr.read() if child.stderr else line
    child.send_signal(signal.SIGINT)  # Ctrl-C: destroy starts with most of the burst in memory
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)  # Ctrl-C again, while the journal drain runs
    _, stderr = child.communicate(timeout=120)
    assert child.returncode in (-signal.SIGINT, 130, 1), stderr
    assert "KeyboardInterrupt" in stderr
    (journal,) = journals_of(tmp_path / "sd" / "runs" / "burst" / "rank-0")
    assert count(journal, "loss") == 300_000
    assert sum(count(journal, f"slow/{i}") for i in range(6)) == 6
    assert meta(journal)["status"] == "killed"


TERM_IN_DESTROY = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, sys.argv[3])
    from core_backends import RecordingBackend, RecordingLogger
    from fanlog import JournalLogger, LoggersCollection
    where, savedir = sys.argv[1], sys.argv[2]
    dead = RecordingLogger(savedir=savedir, backend=RecordingBackend(always_fail=True))
    logger = LoggersCollection([JournalLogger(savedir=savedir, log_freq="batch"), dead],
                               job_id="term", close_timeout=120, down_after=120, retry_initial=0.1)
    logger.create_logger_context(rank=0)
    for i in range(1000):
        logger.log(float(i), "loss")
    print("closing", flush=True)
    if where == "main-thread":
        logger.destroy_logger_context()  # waits up to 120 s for the tracker that never answers
    else:
        closer = threading.Thread(target=logger.destroy_logger_context)
        closer.start()
        closer.join()
    print("not reached", flush=True)
    """
)


@pytest.mark.parametrize("where", ["main-thread", "other-thread"])
def test_sigterm_during_destroy_closes_as_killed_within_the_grace(tmp_path: Path, where: str) -> None:
    grace = 3.0
    child = subprocess.Popen(
        [sys.executable, "-c", TERM_IN_DESTROY, where, str(tmp_path / "sd"), TESTS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, "FANLOG_SIGTERM_GRACE": str(grace)},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "closing"
    time.sleep(1.0)  # destroy is waiting for the dead tracker now
    sent = time.monotonic()
    child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=60)
    took = time.monotonic() - sent
    assert child.returncode == -signal.SIGTERM, stderr
    assert "not reached" not in stdout
    assert took < grace + 10  # generous: the point is that it ends, not a timing figure
    (journal,) = journals_of(tmp_path / "sd" / "runs" / "term" / "rank-0")
    assert meta(journal)["status"] == "killed"
    assert count(journal, "loss") == 1000


NO_WITH = textwrap.dedent(
    """
    import sys, time
    from fanlog import JournalLogger
    how, savedir = sys.argv[1], sys.argv[2]
    logger = JournalLogger(savedir=savedir, log_freq="batch", job_id=how)
    logger.create_logger_context(rank=0)
    for i in range(2000):
        logger.log(float(i), "loss")
    if how == "exception":
        raise RuntimeError("boom in the training loop")
    if how == "ctrl-c":
        print("waiting", flush=True)
        time.sleep(600)
    if how == "sys-exit":
        sys.exit(0)
    """
)


@pytest.mark.parametrize(
    ("how", "status"),
    [("exception", "failed"), ("ctrl-c", "killed"), ("normal", "finished"), ("sys-exit", "finished")],
)
def test_without_start_logging_the_exit_decides_the_status(tmp_path: Path, how: str, status: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", NO_WITH, how, str(tmp_path / "sd")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if how == "ctrl-c":
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "waiting"
        child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    if how == "exception":
        assert "boom in the training loop" in stderr
    (journal,) = journals_of(tmp_path / "sd" / "runs" / how / "rank-0")
    assert meta(journal)["status"] == status
    assert count(journal, "loss") == 2000


def test_automatic_steps_are_unique_per_key_across_threads(tmp_path: Path) -> None:
    logger = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch")
    logger.create_logger_context(rank=0)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:

        def work() -> None:
            for _ in range(5000):
                logger.log(1.0, "shared")
                logger.log(1.0, "also/shared")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    logger.destroy_logger_context()
    data = read_run(str(logger.journal_path))
    for key in ("shared", "also/shared"):
        assert sorted(step for step, _ in data.metric(key)) == list(range(40_000))
