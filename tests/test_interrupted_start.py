"""A start that is interrupted (kill -9, Ctrl-C, a signal handler that raises) leaves nothing
behind that blocks the next one: no journal without tables that refuses later starts, no
writer lock held, no background thread running.

The half-made journals are made by real processes that die (SIGKILL) at the points where
fanlog's start can be cut; the interruptions inside one process are real signals.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fanlog import JournalLogger, read_run
from fanlog.errors import BadJournalError
from fanlog.journal import lock as writer_lock
from support.journals import count, fanlog_cli, journals_of, meta

# What fanlog's start does to a new journal, cut short by SIGKILL after each step.
HALF_MADE = {
    "after-connect": "c = sqlite3.connect(path)",
    "after-wal": "c = sqlite3.connect(path); c.execute('PRAGMA journal_mode=WAL'); "
    "c.execute('PRAGMA synchronous=NORMAL')",
    "after-exclusive-wal": "c = sqlite3.connect(path); c.execute('PRAGMA locking_mode=EXCLUSIVE'); "
    "c.execute('PRAGMA journal_mode=WAL'); "
    "c.execute('CREATE TABLE IF NOT EXISTS x (a)'); c.execute('DROP TABLE x')",
    "after-tables": "c = sqlite3.connect(path); c.execute('PRAGMA journal_mode=WAL'); c.executescript(DDL)",
    "empty-file": "open(path, 'wb').close()",
}


def die_while_creating(journal: Path, step: str) -> None:
    code = textwrap.dedent(
        f"""
        import os, signal, sqlite3
        from fanlog.journal.schema import DDL
        path = {str(journal)!r}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        {HALF_MADE[step]}
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr


@pytest.mark.parametrize("step", sorted(HALF_MADE))
def test_a_journal_whose_creation_was_cut_short_is_reused_by_the_next_start(
    tmp_path: Path, step: str
) -> None:
    """A SLURM requeue (same job id) after the first attempt died while creating its journal."""
    savedir = tmp_path / "sd"
    rank_dir = savedir / "runs" / "slurm-42" / "rank-0"
    die_while_creating(rank_dir / "journal.sqlite", step)
    listed = fanlog_cli("ls", str(savedir))  # readers say what the file is, never a traceback
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr

    logger = JournalLogger(savedir=savedir, job_id="slurm-42", log_freq="batch")
    logger.create_logger_context(rank=0)
    for i in range(100):
        logger.log(float(i), "loss", step=i)
    assert logger.destroy_logger_context() is True
    assert [os.path.basename(p) for p in journals_of(rank_dir)] == ["journal.sqlite"]
    journal = str(rank_dir / "journal.sqlite")
    assert count(journal, "loss") == 100 and meta(journal)["status"] == "finished"
    assert [v for _, v in read_run(savedir).metric("loss")] == [float(i) for i in range(100)]


def test_an_sqlite_file_with_other_tables_is_refused_with_what_to_do(tmp_path: Path) -> None:
    journal = tmp_path / "sd" / "runs" / "mine" / "rank-0" / "journal.sqlite"
    journal.parent.mkdir(parents=True)
    with sqlite3.connect(journal) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    conn.close()
    logger = JournalLogger(savedir=tmp_path / "sd", job_id="mine")
    with pytest.raises(BadJournalError, match="move it away") as caught:
        logger.create_logger_context(rank=0)
    assert str(journal) in str(caught.value)
    assert not writer_lock._held and not logger.is_active


def fanlog_threads(others: frozenset[threading.Thread] = frozenset()) -> list[str]:
    """fanlog's live threads, but for `others` (threads another test left behind)."""
    return [
        t.name
        for t in threading.enumerate()
        if t.name.startswith("fanlog") and t.is_alive() and t not in others
    ]


def raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # a handler of the user's that raises


def real_ctrl_c(signum: int, frame: Any) -> None:
    os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, with Python's own handler


@pytest.mark.slow
@pytest.mark.parametrize("interrupt", [raise_interrupt, real_ctrl_c], ids=["raising-handler", "sigint"])
def test_an_interrupt_anywhere_in_create_leaks_no_lock_no_thread_and_no_blank_journal(
    tmp_path: Path, interrupt: Any
) -> None:
    """An interrupt at 150 different points of create_logger_context(): after each, nothing
    of the run is left running or locked, the run is closed killed, and the next logger of
    the run starts in journal.sqlite with every record."""
    others = frozenset(threading.enumerate())  # e.g. a call another test left hanging
    previous = signal.signal(signal.SIGALRM, interrupt)
    savedir = tmp_path / "sd"
    interrupted = 0
    logged: set[int] = set()
    completed: set[int] = set()
    try:
        for k in range(150):
            logger = JournalLogger(savedir=savedir, job_id="k", log_freq="batch")
            try:
                try:
                    signal.setitimer(signal.ITIMER_REAL, 0.00004 * (k + 1))
                    logger.create_logger_context(rank=0)
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    logged.add(k)
                    logger.log(float(k), "loss", step=k)
                    if logger.destroy_logger_context():
                        completed.add(k)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except KeyboardInterrupt:
                interrupted += 1
                if logger.is_active:  # it landed after the start returned: the user's `finally`
                    logger.destroy_logger_context("killed")
            assert not writer_lock._held, k
            assert not logger.is_active, k
            deadline = time.monotonic() + 5
            while fanlog_threads(others) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert fanlog_threads(others) == [], k
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert interrupted > 0  # some starts were cut short (the others completed)
    rank_dir = savedir / "runs" / "k" / "rank-0"
    assert [os.path.basename(p) for p in journals_of(rank_dir)] == ["journal.sqlite"]
    assert meta(str(rank_dir / "journal.sqlite"))["status"] in ("finished", "killed")
    stored = {step for step, _ in read_run(savedir).metric("loss")}
    assert completed <= stored <= logged and len(completed) >= 150 - interrupted  # nothing lost
    logger = JournalLogger(savedir=savedir, job_id="k", log_freq="batch")
    logger.create_logger_context(rank=0)
    assert os.path.basename(str(logger.journal_path)) == "journal.sqlite"
    logger.log(1.0, "last", step=0)
    assert logger.destroy_logger_context() is True
    read_run(rank_dir / "journal.sqlite")
    assert count(str(rank_dir / "journal.sqlite"), "last") == 1
