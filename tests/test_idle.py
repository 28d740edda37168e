"""A run that logs nothing costs nothing: fanlog's threads sleep without a timer (issue 15),
and wake when there is work. Wake-ups are read from the kernel's count of each thread's
voluntary context switches (Linux)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from core_backends import RecordingLogger
from fanlog import JournalLogger, LoggersCollection
from support.journals import count

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def wakeups(thread: threading.Thread) -> int:
    with open(f"/proc/self/task/{thread.native_id}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


@pytest.mark.parametrize("trackers", [0, 1, 3])
def test_an_idle_run_wakes_no_thread_and_later_records_arrive(tmp_path: Path, trackers: int) -> None:
    others = set(threading.enumerate())  # threads another test left behind are not ours
    recordings = [RecordingLogger(savedir=str(tmp_path)) for _ in range(trackers)]
    logger = LoggersCollection(
        [JournalLogger(savedir=str(tmp_path), log_freq="batch"), *recordings], flush_interval=0.05
    )
    logger.create_logger_context(rank=0)
    logger.log(1.0, "warm-up", step=0)
    assert logger.flush(timeout=30)
    time.sleep(0.3)  # the threads settle after the first delivery
    threads = [t for t in threading.enumerate() if t.name.startswith("fanlog-") and t not in others]
    assert len(threads) == 1 + trackers
    before = {t.name: wakeups(t) for t in threads}
    time.sleep(1.0)  # 20 flush intervals: a polling thread would wake at least 20 times
    after = {t.name: wakeups(t) for t in threads}
    assert after == before
    for step in range(10):
        logger.log(float(step), "loss", step=step)
    assert logger.flush(timeout=30)
    path = logger.journal_path
    assert logger.destroy_logger_context()
    assert count(path, "loss") == 10
    for recording in recordings:
        assert [r.step for r in recording.instance.records if r.key == "loss"] == list(range(10))
