"""Exit paths with real processes: atexit, SIGTERM and kill -9, then the journal read back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import fanlog

pytestmark = pytest.mark.slow  # each test runs a child process

CHILD = textwrap.dedent(
    """
    import sys, time
    from fanlog import JournalLogger
    mode, savedir = sys.argv[1], sys.argv[2]
    logger = JournalLogger(savedir=savedir, log_freq="batch", flush_interval=0.1)
    logger.create_logger_context()
    if mode == "atexit":
        for i in range(500):
            logger.log(float(i), "x")
        sys.exit(0)  # no destroy: atexit must flush and close as finished
    i = 0
    while True:
        logger.log(float(i), "x")
        if i % 200 == 0:
            print(i, time.time(), flush=True)
            time.sleep(0.001)
        i += 1
    """
)


def spawn(mode: str, savedir) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(savedir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_atexit_flushes_and_finishes(tmp_path):
    child = spawn("atexit", tmp_path)
    assert child.wait(timeout=60) == 0, child.stderr.read()
    run = fanlog.read_run(tmp_path)
    assert [v for _, v in run.metric("x")] == [float(i) for i in range(500)]
    assert run.meta[0]["status"] == "finished"


def wait_for_progress(child: subprocess.Popen, lines: int) -> list[tuple[int, float]]:
    seen = []
    while len(seen) < lines:
        line = child.stdout.readline()
        assert line, child.stderr.read()
        count, when = line.split()
        seen.append((int(count), float(when)))
    return seen


def test_sigterm_flushes_marks_killed_and_exits_143(tmp_path):
    child = spawn("loop", tmp_path)
    seen = wait_for_progress(child, 5)
    child.send_signal(signal.SIGTERM)
    code = child.wait(timeout=60)
    assert code == -signal.SIGTERM  # default action after our handler: conventional 128+15 in a shell
    run = fanlog.read_run(tmp_path)
    assert run.meta[0]["status"] == "killed"
    values = [v for _, v in run.metric("x")]
    assert values == [float(i) for i in range(len(values))]  # contiguous: nothing lost in between
    assert values[-1] >= seen[-1][0]


def test_kill9_loses_at_most_one_flush_interval(tmp_path):
    child = spawn("loop", tmp_path)
    seen = wait_for_progress(child, 10)
    time.sleep(0.5)
    killed_at = time.time()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    rest = child.stdout.read().split("\n")
    seen += [(int(a), float(b)) for a, b in (line.split() for line in rest if line.strip())]
    run = fanlog.read_run(tmp_path)  # the journal opens and reads after the kill
    values = [v for _, v in run.metric("x")]
    assert values == [float(i) for i in range(len(values))]
    # everything logged at least one flush interval (0.1 s, plus scheduling slack) before the kill
    safe = [count for count, when in seen if when <= killed_at - 0.1 - 0.4]
    assert safe and len(values) > max(safe)
    assert run.meta[0]["status"] == "running"  # never closed: sync can tell
