"""fanlog.isolated: a tracker library's handler served by a real child process.

The handler (tests/support/isolated_handler.py) runs in the child; these tests check what
the parent gets back: answers, errors with tracebacks, timeouts with the child's log, CPU
time, the final request, and what the child does when its parent is killed with -9.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fanlog.isolated import LOG_NAME, Worker, WorkerError

pytestmark = pytest.mark.slow

TESTS = str(Path(__file__).parent)
HANDLER = "support.isolated_handler:Recorder"


def start(workdir: Path, call_timeout: float = 60.0) -> Worker:
    workdir.mkdir(parents=True, exist_ok=True)
    return Worker(
        HANDLER,
        str(workdir),
        name="recorder",
        call_timeout=call_timeout,
        env={"PYTHONPATH": TESTS, "ISOLATED_TEST_VALUE": "from the parent"},
        final_op="end",
    )


def test_the_handler_runs_in_a_child_in_its_own_directory(tmp_path: Path) -> None:
    worker = start(tmp_path / "cwd")
    try:
        answers = [worker.call("echo", {"n": n}) for n in range(3)]
        assert [a["payload"] for a in answers] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert {a["cwd"] for a in answers} == {str(tmp_path / "cwd")}
        assert {a["pid"] for a in answers} == {worker.process.pid} != {os.getpid()}
        assert answers[0]["env"] == "from the parent"
        assert os.getcwd() != str(tmp_path / "cwd")
        assert worker.call("end", None) == 3  # the final request: answered, then the child exits
        assert worker.process.wait(30) == 0
    finally:
        worker.stop()


def test_errors_carry_the_childs_traceback_and_the_worker_goes_on(tmp_path: Path) -> None:
    worker = start(tmp_path / "cwd")
    try:
        for payload in ("a", 2, None):
            expected = rf"(?s)recorder fail failed:\n.*Traceback.*ValueError: refused {payload!r}"
            with pytest.raises(WorkerError, match=expected):
                worker.call("fail", payload)
        for op in ("_private", "__init__", "no_such_request"):
            with pytest.raises(WorkerError, match=f"recorder {op} failed"):
                worker.call(op, None)
        assert worker.call("echo", "still here")["payload"] == "still here"
    finally:
        worker.stop()


def test_a_silent_child_is_stopped_and_its_log_is_in_the_error(tmp_path: Path) -> None:
    worker = start(tmp_path / "cwd", call_timeout=0.5)
    with pytest.raises(WorkerError, match="no answer to 'sleep' in time") as caught:
        worker.call("sleep", 3)
    assert "going to sleep for 3 s" in str(caught.value)
    assert str(tmp_path / "cwd" / LOG_NAME) in str(caught.value)
    assert worker.process.poll() is not None  # stopped, not left behind
    with pytest.raises(WorkerError, match="exited"):
        worker.call("echo", "too late")


def test_cpu_seconds_count_the_childs_work(tmp_path: Path) -> None:
    worker = start(tmp_path / "cwd")
    try:
        before = worker.cpu_seconds()
        assert before is not None
        spent = worker.call("spin", 0.3)
        after = worker.cpu_seconds()
        assert spent >= 0.3 and after is not None and after - before >= 0.29
    finally:
        worker.stop()


PARENT = textwrap.dedent("""
    import os, signal, sys
    from fanlog.isolated import Worker

    worker = Worker("support.isolated_handler:Recorder", sys.argv[1], name="recorder",
                    call_timeout=60, env={"PYTHONPATH": sys.argv[2]}, final_op="end")
    worker.call("echo", "first")
    worker.call("echo", "second")
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_child_whose_parent_is_killed_saves_what_it_has_and_exits(tmp_path: Path) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", PARENT, str(workdir), TESTS], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    saved = workdir / "parent-gone.txt"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not saved.exists():
        time.sleep(0.1)
    assert saved.read_text() == "['first', 'second']"
