"""The journal owns its schema: storage forms recorded per kind, a schema version, one layout.

A user kind is registered in one process and its journal is read, exported and synced in
fresh processes that never registered it. A journal whose `schema_version` says it comes
from a newer fanlog is refused by every reader and never written to. Journals are written
by real loggers and read back with plain SQLite (tests/support/journals.py) or fanlog's CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fanlog.backends.journal import JournalLogger
from fanlog.errors import BadJournalError
from fanlog.journal import SCHEMA_VERSION, NewerJournalError, layout
from fanlog.journal.lock import writer_alive
from fanlog.kinds import Kind, register_kind
from fanlog.reader import read_run
from support.journals import count, fanlog_cli, meta, query

USER_KINDS_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    from fanlog import JournalLogger
    from fanlog.kinds import Kind, register_kind

    register_kind(Kind("embedding", lambda item, key: np.asarray(item, dtype=np.float64), storage="npy"))
    register_kind(Kind("score", lambda item, key: float(item), storage="num"))
    register_kind(Kind("blob", lambda item, key: bytes(item), storage="bytes"))
    register_kind(Kind("note", lambda item, key: {"text": str(item)}, storage="json"))
    logger = JournalLogger(savedir=sys.argv[1], log_freq="batch", job_id="user-kinds")
    with logger.start_logging(rank=0):
        for step in range(3):
            logger.log(float(step) / 2, "loss", step=step)
            logger.log([step, step + 0.5], "emb", kind="embedding", step=step)
            logger.log(step * 2, "score", kind="score", step=step)
            logger.log(bytes([step, 255]), "blob", kind="blob", step=step)
            logger.log(f"n{step}", "note", kind="note", step=step)
    print(logger.journal_path)
""")

READ_BACK = textwrap.dedent("""
    import json, sys
    from fanlog import read_run
    from fanlog.kinds import known_kinds

    assert "embedding" not in known_kinds()  # this process never registered the user kinds
    out = []
    for r in read_run(sys.argv[1]).records:
        value = r.value
        if isinstance(value, bytes):
            value = {"bytes": list(value)}
        elif hasattr(value, "tolist"):
            value = {"array": value.tolist(), "dtype": str(value.dtype)}
        out.append([r.kind, r.key, r.step, value])
    print(json.dumps(out))
""")


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def user_kinds_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with four user kinds (npy, num, bytes, json) written by a process of its own."""
    savedir = tmp_path_factory.mktemp("user-kinds") / "mllogs"
    journal = python(USER_KINDS_RUN, str(savedir)).stdout.strip()
    assert count(journal) == 15
    return Path(journal)


def test_the_writer_records_each_kinds_storage_once(user_kinds_run: Path) -> None:
    stored = dict(query(user_kinds_run, "SELECT name, storage FROM kinds"))
    assert stored == {"metric": "num", "embedding": "npy", "score": "num", "blob": "bytes", "note": "json"}
    assert meta(user_kinds_run)["schema_version"] == SCHEMA_VERSION == 2


@pytest.mark.slow
def test_a_fresh_process_reads_user_kinds_it_never_registered(user_kinds_run: Path) -> None:
    records = json.loads(python(READ_BACK, str(user_kinds_run.parent.parent)).stdout)
    assert len(records) == 15
    by_kind = {(kind, step): value for kind, _, step, value in records}
    for step in range(3):
        assert by_kind["metric", step] == step / 2
        assert by_kind["embedding", step] == {"array": [step, step + 0.5], "dtype": "float64"}
        assert by_kind["score", step] == step * 2
        assert by_kind["blob", step] == {"bytes": [step, 255]}
        assert by_kind["note", step] == {"text": f"n{step}"}


@pytest.mark.slow
def test_export_in_a_fresh_process_decodes_user_kinds(user_kinds_run: Path) -> None:
    run_dir = str(user_kinds_run.parent.parent)
    lines = fanlog_cli("export", run_dir, "--kind", "all", "--format", "jsonl").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 15
    values = {(r["kind"], r["step"]): r["value"] for r in rows}
    assert [values["embedding", s] for s in range(3)] == [[0, 0.5], [1, 1.5], [2, 2.5]]
    assert [values["score", s] for s in range(3)] == [0, 2, 4]
    assert [values["blob", s] for s in range(3)] == [{"bytes": 2}] * 3
    assert [values["note", s] for s in range(3)] == [{"text": "n0"}, {"text": "n1"}, {"text": "n2"}]


@pytest.mark.slow
def test_sync_in_a_fresh_process_reads_past_user_kinds(user_kinds_run: Path, tmp_path: Path) -> None:
    """TensorBoard stores none of the user kinds, but sync must read (decode) their rows to
    get past them: the three metrics arrive, the twelve others are counted as skipped."""
    pytest.importorskip("tensorboard")
    from support.readback import tensorboard_scalars

    logdir = tmp_path / "tb"
    done = fanlog_cli("sync", str(user_kinds_run), "--to", "tensorboard", "--logdir", str(logdir))
    assert "sent 3 record(s)" in done.stdout
    assert "3 blob, 3 embedding, 3 note, 3 score" in done.stdout
    assert tensorboard_scalars(logdir)["loss"] == [(0, 0.0), (1, 0.5), (2, 1.0)]


# ----------------------------------------------------------------------------- newer journals
def bump_version(journal: Path, version: object) -> str:
    """Say, with plain SQLite, that the journal has schema `version`; return the file's hash."""
    conn = sqlite3.connect(journal)
    with conn:
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (json.dumps(version),)
        )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{journal}{suffix}"):
            os.remove(f"{journal}{suffix}")
    return digest(journal)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def small_run(savedir: Path, job_id: str, records: int = 4) -> Path:
    logger = JournalLogger(savedir=str(savedir), log_freq="batch", job_id=job_id)
    with logger.start_logging(rank=0):
        for step in range(records):
            logger.log(float(step), "loss", step=step)
    assert logger.journal_path is not None
    return Path(logger.journal_path)


@pytest.mark.slow
@pytest.mark.parametrize("version", [3, 99])
def test_every_reader_refuses_a_journal_of_a_newer_fanlog(tmp_path: Path, version: int) -> None:
    journal = small_run(tmp_path / "sd", f"newer-{version}")
    before = bump_version(journal, version)
    said = (
        f"written by a newer fanlog (schema {version}); this fanlog reads up to schema "
        f"{SCHEMA_VERSION}; upgrade"
    )
    with pytest.raises(NewerJournalError, match=r"written by a newer fanlog \(schema"):
        read_run(journal)
    listing = json.loads(fanlog_cli("ls", str(tmp_path / "sd"), "--json").stdout)
    assert [entry["status"] for entry in listing] == [f"unreadable (it was {said} fanlog to read it)"]
    for command in (
        ("show", str(journal)),
        ("export", str(journal)),
        ("plot", str(journal), "-o", str(tmp_path / "c.png")),
    ):
        done = fanlog_cli(*command, check=False)
        assert done.returncode == 1 and said in done.stderr, (command, done.stderr)
    done = fanlog_cli(
        "sync", str(journal), "--to", "tensorboard", "--logdir", str(tmp_path / "tb"), check=False
    )
    assert done.returncode == 1 and said in done.stdout + done.stderr
    assert not (tmp_path / "tb").exists()
    assert digest(journal) == before  # no reader wrote into it
    assert not os.path.exists(f"{journal}-wal")


def test_a_logger_never_resumes_into_a_journal_of_a_newer_fanlog(tmp_path: Path) -> None:
    journal = small_run(tmp_path / "sd", "resume-newer")
    before = bump_version(journal, 3)
    logger = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch", job_id="resume-newer")
    with pytest.raises(NewerJournalError, match="upgrade fanlog"):
        logger.create_logger_context(rank=0)
    assert digest(journal) == before
    assert count(journal) == 4


@pytest.mark.parametrize("garbage", ["two", 2.5, None])
def test_a_schema_version_that_is_not_a_number_is_a_clear_error(tmp_path: Path, garbage: object) -> None:
    journal = small_run(tmp_path / "sd", "garbage")
    bump_version(journal, garbage)
    with pytest.raises(BadJournalError, match="schema_version is .* not a whole number"):
        read_run(journal)


# ----------------------------------------------------------------------------- version 1 journals
def make_version_1(journal: Path) -> None:
    """Turn a journal into one written before schema 2: no kinds table, no version."""
    conn = sqlite3.connect(journal)
    with conn:
        conn.execute("DROP TABLE kinds")
        conn.execute("DELETE FROM meta WHERE key = 'schema_version'")
    conn.close()


def test_a_version_1_journal_is_read_with_the_registered_kinds_and_upgraded_on_resume(
    tmp_path: Path,
) -> None:
    journal = small_run(tmp_path / "sd", "old", records=3)
    make_version_1(journal)
    assert [v for _, v in read_run(journal).metric("loss")] == [0.0, 1.0, 2.0]
    assert "kinds" not in {name for (name,) in query(journal, "SELECT name FROM sqlite_master")}
    logger = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch", job_id="old")
    with logger.start_logging(rank=0):
        logger.log("resumed", "note", kind="text")
    assert logger.journal_path == str(journal)
    assert meta(journal)["schema_version"] == 2
    assert dict(query(journal, "SELECT name, storage FROM kinds")) == {"text": "json"}
    data = read_run(journal)
    assert [v for _, v in data.metric("loss")] == [0.0, 1.0, 2.0]
    assert [r.value for r in data.of_kind("text")] == ["resumed"]


def test_a_kind_registered_with_another_storage_on_resume_is_set_aside(tmp_path: Path) -> None:
    """The journal says how the kind was stored; rows of another form could not be read back."""
    name = "schema_test_shifting"
    register_kind(Kind(name, lambda item, key: [float(x) for x in item], storage="json"))
    logger = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch", job_id="shift")
    with logger.start_logging(rank=0):
        logger.log([1, 2], "v", kind=name, step=0)
    register_kind(Kind(name, lambda item, key: [float(x) for x in item], storage="npy"), replace=True)
    resumed = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch", job_id="shift")
    with pytest.warns(RuntimeWarning), resumed.start_logging(rank=0):
        resumed.log([3, 4], "v", kind=name, step=1)
        resumed.log(5.0, "loss", step=1)
    journal = Path(str(resumed.journal_path))
    assert count(journal) == 2  # the first row and the metric
    ((kind, key, reason),) = query(journal, "SELECT kind, key, reason FROM unstored")
    assert (kind, key) == (name, "v")
    assert "is stored as 'json'" in reason and "stores 'npy'" in reason
    assert [r.value for r in read_run(journal).of_kind(name)] == [[1.0, 2.0]]


# ----------------------------------------------------------------------------- layout and liveness
def test_the_layout_builds_and_parses_the_same_paths(tmp_path: Path) -> None:
    rank_dir = layout.rank_dir(str(tmp_path / "sd"), "run-7", 3)
    assert rank_dir == str(tmp_path / "sd" / "runs" / "run-7" / "rank-3")
    for number, name, files in [
        (1, "journal.sqlite", "files"),
        (2, "journal.2.sqlite", "files.2"),
        (12, "journal.12.sqlite", "files.12"),
    ]:
        path = layout.journal_file(rank_dir, number)
        assert os.path.basename(path) == name
        assert layout.journal_number(path) == number
        assert layout.files_name(path) == files
        assert layout.rank_of(path) == 3
        assert layout.run_id_of(path) == "run-7"
        assert layout.savedir_of(path) == str(tmp_path / "sd")
    assert layout.journal_number(os.path.join(rank_dir, "journal.1.sqlite")) is None
    assert layout.rank_of(str(tmp_path / "elsewhere" / "journal.sqlite")) is None


def test_resolve_run_names_what_it_found(tmp_path: Path) -> None:
    savedir = tmp_path / "sd"
    for job in ("alpha-1", "alpha-2", "beta"):
        small_run(savedir, job, records=1)
    assert layout.resolve_run("beta", str(savedir)) == str(savedir / "runs" / "beta")
    assert layout.resolve_run("be", str(savedir)) == str(savedir / "runs" / "beta")
    with pytest.raises(layout.RunNotFoundError, match="matches several runs: alpha-1, alpha-2"):
        layout.resolve_run("alpha", str(savedir))
    with pytest.raises(layout.RunNotFoundError, match="neither a path nor a run id; runs: alpha-1"):
        layout.resolve_run("gamma", str(savedir))
    with pytest.raises(layout.RunNotFoundError, match="none under"):
        layout.resolve_run("gamma", str(tmp_path / "empty"))


@pytest.mark.slow
def test_the_writer_alive_rule(tmp_path: Path) -> None:
    host = os.uname().nodename
    assert writer_alive(os.getpid(), host) is True
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    assert writer_alive(ended.pid, host) is False
    for code in ["pass", "import os; os.kill(os.getpid(), 9)", "raise SystemExit(3)"]:
        unreaped = subprocess.Popen([sys.executable, "-c", code])  # dead, not waited for yet
        while (
            not os.path.exists(f"/proc/{unreaped.pid}/stat")
            or b") Z" not in Path(f"/proc/{unreaped.pid}/stat").read_bytes()
        ):
            time.sleep(0.01)
        assert writer_alive(unreaped.pid, host) is False, code  # a zombie is gone
        unreaped.wait()
    assert writer_alive(1, host) is True  # init: someone's process, alive
    for pid, on in [
        (os.getpid(), "some-other-host"),
        (None, host),
        ("12", host),
        (True, host),
        (0, host),
        (-1, host),
        (os.getpid(), None),
    ]:
        assert writer_alive(pid, on) is None, (pid, on)


LIVE_WRITER = textwrap.dedent("""
    import sys
    from fanlog import TensorBoardLogger
    # logdir is a regular file: TensorBoard cannot write there, so every record stays pending.
    logger = TensorBoardLogger(savedir=sys.argv[1], logdir=sys.argv[2], log_freq="batch", job_id="live")
    logger.create_logger_context(rank=0)
    for step in range(5):
        logger.log(float(step), "loss", step=step)
    logger.flush(timeout=1)
    print(logger.journal_path, flush=True)
    sys.stdin.read()
""")


@pytest.mark.slow
def test_sync_and_ls_agree_on_whether_the_writer_is_alive(tmp_path: Path) -> None:
    """While the writer runs, ls says running and sync will not race it on its own cursor;
    once it is killed with -9, ls says interrupted and sync delivers everything."""
    pytest.importorskip("tensorboard")
    from fanlog.delivery.sync import SyncError, sync
    from support.readback import tensorboard_scalars

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    writer = subprocess.Popen(
        [sys.executable, "-c", LIVE_WRITER, str(tmp_path / "sd"), str(blocked)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert writer.stdout is not None
        journal = writer.stdout.readline().strip()
        assert count(journal) == 5
        (status,) = [s["status"] for s in json.loads(fanlog_cli("ls", str(tmp_path / "sd"), "--json").stdout)]
        assert status == "running"
        with pytest.raises(SyncError, match=f"process {writer.pid} still writes this run"):
            sync(journal, to="tensorboard", logdir=str(tmp_path / "tb"), progress=False)
    finally:
        writer.kill()
        writer.wait()
    (status,) = [s["status"] for s in json.loads(fanlog_cli("ls", str(tmp_path / "sd"), "--json").stdout)]
    assert status == "interrupted"
    report = sync(journal, to="tensorboard", logdir=str(tmp_path / "tb"), progress=False)
    assert report.ok and report.sent == 5
    assert tensorboard_scalars(tmp_path / "tb")["loss"] == [(s, float(s)) for s in range(5)]
