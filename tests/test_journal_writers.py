"""One journal, one writer: every logger appends to a journal of its own, enforced by a lock.

Real loggers in this process, real spawned workers and real second processes with the same
run id; every record is counted in the journal files (plain SQLite) and through read_run and
the `fanlog ls/show/export` commands run as subprocesses.
"""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from core_backends import RecordingLogger
from fanlog import JournalLogger, LoggersCollection, read_run
from fanlog.journal import Journal
from support.journals import count, fanlog_cli, journals_of, meta, query
from support.workers import log_with, use_unstarted

pytestmark = pytest.mark.slow


def check_listed(savedir: Path, run_id: str, expected: dict[str, int]) -> None:
    """`fanlog ls`, `show` and `export` see every journal of the run, with every record."""
    run_dir = savedir / "runs" / run_id
    journals = len(journals_of(run_dir / "rank-0"))
    listing = fanlog_cli("ls", str(savedir), "--json").stdout
    rows = [r for r in json.loads(listing) if r["run_id"] == run_id]
    assert len(rows) == journals and sum(r["records"] for r in rows) == sum(expected.values())
    table = fanlog_cli("ls", str(savedir)).stdout
    assert len([line for line in table.splitlines() if line.startswith(run_id)]) == journals
    shown = json.loads(fanlog_cli("show", str(run_dir), "--json").stdout)
    assert sum(s["records"] for s in shown["run"]) == sum(expected.values())
    assert {m["key"]: m["count"] for m in shown["metrics"]} == expected
    exported = fanlog_cli("export", str(run_dir), "--format", "jsonl", "--kind", "all").stdout
    keys = [json.loads(line)["key"] for line in exported.splitlines()]
    assert {k: keys.count(k) for k in expected} == expected


@pytest.mark.parametrize("how", ["slurm-env", "job_id"])
def test_two_loggers_with_one_run_id_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    savedir = tmp_path / "sd"
    if how == "slurm-env":
        monkeypatch.setenv("SLURM_JOB_ID", "4242")
        options: dict[str, str] = {}
        run_id = "slurm-4242"
    else:
        options = {"job_id": "shared"}
        run_id = "shared"
    train = JournalLogger(savedir=str(savedir), log_freq="batch", **options)
    evaluation = LoggersCollection(
        [JournalLogger(savedir=str(savedir), log_freq="batch"), RecordingLogger(savedir=str(savedir))],
        **options,
    )
    train.create_logger_context(rank=0)
    evaluation.create_logger_context(rank=0)
    assert train.journal_path != evaluation.journal_path
    for step in range(3000):
        train.log(float(step), "train/loss", step=step, batch_idx=step)
        if step % 3 == 0:
            evaluation.log(float(step), "eval/acc", step=step)
    assert train.flush(timeout=60) and evaluation.flush(timeout=60)
    train.destroy_logger_context()
    evaluation.destroy_logger_context()

    rank_dir = savedir / "runs" / run_id / "rank-0"
    first, second = journals_of(rank_dir)
    assert (count(first, "train/loss"), count(second, "eval/acc")) == (3000, 1000)
    assert count(first) == 3000 and count(second) == 1000  # nothing of one in the other
    assert [r.value for r in evaluation.members()[1].instance.records] == [
        float(s) for s in range(0, 3000, 3)
    ]
    data = read_run(rank_dir.parent)
    assert len(data.metric("train/loss")) == 3000 and len(data.metric("eval/acc")) == 1000
    assert set(data.journals) == {first, second}
    check_listed(savedir, run_id, {"train/loss": 3000, "eval/acc": 1000})


def test_a_spawned_worker_starts_the_logger_it_was_handed(tmp_path: Path) -> None:
    savedir = tmp_path / "sd"
    parent = JournalLogger(savedir=str(savedir), log_freq="batch", job_id="spawned")
    unstarted = JournalLogger(savedir=str(savedir), log_freq="batch", job_id="spawned")
    parent.create_logger_context(rank=0)
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        # a started logger travels unstarted, keeping its run id; an unstarted one as it is
        pending = [
            pool.apply_async(log_with, (parent, "worker/started", 700)),
            pool.apply_async(log_with, (unstarted, "worker/unstarted", 500)),
        ]
        for step in range(2000):  # the parent goes on logging meanwhile
            parent.log(float(step), "parent/loss", step=step)
        paths = [result.get(timeout=120) for result in pending]
        message = pool.apply(use_unstarted, (parent,))
    assert "LoggerNotStartedError" in message and "call create_logger_context() here" in message
    parent.destroy_logger_context()
    assert parent.journal_path not in paths  # a journal of their own (one worker may resume it)
    assert sum(count(p, "worker/started") for p in set(paths)) == 700
    assert sum(count(p, "worker/unstarted") for p in set(paths)) == 500
    assert count(str(parent.journal_path)) == 2000
    assert all(meta(p)["status"] == "finished" and meta(p)["run_id"] == "spawned" for p in paths)
    check_listed(savedir, "spawned", {"parent/loss": 2000, "worker/started": 700, "worker/unstarted": 500})


SECOND_PROCESS = textwrap.dedent(
    """
    import sys
    from fanlog import JournalLogger
    logger = JournalLogger(savedir=sys.argv[1], log_freq="batch", job_id="resumed")
    logger.create_logger_context(rank=0)
    print(logger.journal_path, flush=True)
    count = 0
    while not sys.stdin.readline().startswith("stop"):  # one line from the test: 500 more
        for _ in range(500):
            logger.log(float(count), "first/loss")
            count += 1
        print(count, flush=True)
    logger.destroy_logger_context()
    print(count, flush=True)
    """
)


def test_a_second_process_with_the_same_job_id_while_the_first_runs(tmp_path: Path) -> None:
    savedir = tmp_path / "sd"
    first = subprocess.Popen(
        [sys.executable, "-c", SECOND_PROCESS, str(savedir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert first.stdin is not None and first.stdout is not None
    first_path = first.stdout.readline().strip()
    first.stdin.write("more\n")
    first.stdin.flush()
    assert first.stdout.readline().strip() == "500"
    second = JournalLogger(savedir=str(savedir), log_freq="batch", job_id="resumed")
    second.create_logger_context(rank=0)
    assert second.journal_path != first_path and Path(str(second.journal_path)).name == "journal.2.sqlite"
    for step in range(1200):
        second.log(float(step), "second/loss")
        if step == 600:
            first.stdin.write("more\n")
            first.stdin.flush()
            assert first.stdout.readline().strip() == "1000"
    second.destroy_logger_context()
    first.stdin.write("stop\n")
    first.stdin.flush()
    assert first.stdout.readline().strip() == "1000"
    assert first.wait(timeout=60) == 0
    assert count(first_path) == 1000 and count(str(second.journal_path)) == 1200
    assert meta(first_path)["status"] == meta(str(second.journal_path))["status"] == "finished"
    check_listed(savedir, "resumed", {"first/loss": 1000, "second/loss": 1200})


def test_a_resume_continues_the_first_free_journal(tmp_path: Path) -> None:
    savedir = str(tmp_path / "sd")

    def run(key: str, steps: int) -> JournalLogger:
        logger = JournalLogger(savedir=savedir, log_freq="batch", job_id="again")
        logger.create_logger_context(rank=0)
        for _ in range(steps):
            logger.log(1.0, key)  # automatic steps
        return logger

    first = run("loss", 10)
    first.destroy_logger_context()
    resumed = run("loss", 5)  # journal.sqlite is free: continued, steps 10..14
    concurrent = run("loss", 3)  # journal.sqlite is held: a sibling, steps from 0
    assert resumed.journal_path == first.journal_path and resumed.run_info.resumed
    assert concurrent.journal_path != first.journal_path and not concurrent.run_info.resumed
    resumed.destroy_logger_context()
    concurrent.destroy_logger_context()
    again = run("loss", 2)  # both free: the first one again
    assert again.journal_path == first.journal_path
    again.destroy_logger_context()
    steps = [s for (s,) in query(str(first.journal_path), "SELECT step FROM records ORDER BY seq")]
    assert steps == list(range(17))
    assert [s for (s,) in query(str(concurrent.journal_path), "SELECT step FROM records")] == [0, 1, 2]


LOCK_PROBE = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("held")
    else:
        print("free")
    """
)


def test_the_writer_lock_is_a_real_lock(tmp_path: Path) -> None:
    logger = JournalLogger(savedir=str(tmp_path / "sd"), job_id="locked")
    logger.create_logger_context(rank=0)
    lock_file = f"{logger.journal_path}.lock"

    def probe() -> str:
        done = subprocess.run(
            [sys.executable, "-c", LOCK_PROBE, lock_file],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    assert probe() == "held"
    holder = json.loads(Path(lock_file).read_text())
    assert holder["pid"] == os.getpid() and holder["mode"] == "wal"
    logger.destroy_logger_context()
    assert probe() == "free"


def test_an_integrity_error_is_not_taken_for_a_full_disk(tmp_path: Path) -> None:
    """A row that collides with one already in the journal (here put there by hand, as a
    writer that ignores the lock would) is set aside; the journal is not 'down'."""
    logger = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch", flush_interval=0.05)
    logger.create_logger_context(rank=0)
    for step in range(100):
        logger.log(float(step), "loss", step=step)
    assert logger.flush(timeout=30)
    path = str(logger.journal_path)
    rogue = Journal(path)  # a second connection
    with rogue._conn:
        rogue._conn.execute(
            "INSERT INTO records (seq, kind, key, step, time, mask, num) VALUES "
            "(101, 'metric', 'rogue', 0, 0, 1, 0)"
        )
    rogue.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(100, 300):
            logger.log(float(step), "loss", step=step)
        assert logger.flush(timeout=30)
    assert not any("cannot write the journal" in str(w.message) for w in caught)
    assert logger._pipeline is not None and logger._pipeline.journal_error is None
    assert logger.unstored == 1
    assert "UNIQUE" in logger.delivery_errors()["journal"][0]
    with pytest.warns(RuntimeWarning, match="could not be stored"):  # the summary says so
        logger.destroy_logger_context()
    assert count(path, "loss") == 299  # the one that collided is set aside, the rest is stored
    (reason,) = [r for (r,) in query(path, "SELECT reason FROM unstored WHERE key = 'loss'")]
    assert "UNIQUE" in reason


def test_without_working_flock_an_owner_file_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system without flock (Lustre without -o flock) cannot be mounted here, so flock is
    made to fail the way it does there (ENOLCK); the owner-file fallback must then exclude."""

    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    savedir = str(tmp_path / "sd")
    first = JournalLogger(savedir=savedir, job_id="nolocks").create_logger_context(rank=0)
    second = JournalLogger(savedir=savedir, job_id="nolocks").create_logger_context(rank=0)
    assert first.journal_path != second.journal_path
    assert os.path.exists(f"{first.journal_path}.owner")
    first.log(1.0, "a")
    second.log(2.0, "b")
    first.destroy_logger_context()
    second.destroy_logger_context()
    assert not os.path.exists(f"{first.journal_path}.owner")
    # an owner file left by a process that is gone (kill -9) is taken over
    Path(f"{first.journal_path}.owner").write_text(
        json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename, "mode": "wal"})
    )
    third = JournalLogger(savedir=savedir, job_id="nolocks").create_logger_context(rank=0)
    assert third.journal_path == first.journal_path
    third.destroy_logger_context()
    assert count(str(first.journal_path)) == 1 and count(str(second.journal_path)) == 1


def test_journals_under_a_save_dir_with_glob_characters(tmp_path: Path) -> None:
    savedir = tmp_path / "runs [v1]"  # glob characters; "#" and "?" are URI matters
    loggers = [JournalLogger(savedir=str(savedir), log_freq="batch", job_id="g[1]") for _ in range(2)]
    for logger in loggers:
        logger.create_logger_context(rank=0)
    for n, logger in enumerate(loggers):
        for step in range(10 * (n + 1)):
            logger.log(float(step), f"k{n}")
        logger.destroy_logger_context()
    data = read_run(savedir)
    assert len(data.metric("k0")) == 10 and len(data.metric("k1")) == 20
    assert len(data.paths) == 2
