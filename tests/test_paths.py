"""Odd save-dir names and damaged journals: every command works or says clearly why not.

Save dirs with ``[ ] # ? %`` and spaces go through the real trackers (MLflow's default
SQLite store, TensorBoard, offline W&B) and the CLI, run as subprocesses as a user would.
Damaged ``journal.sqlite`` files (empty, truncated, garbled, not SQLite, another SQLite
database, a directory) must give an error that names the file, never a traceback, and
must never be written to. After every read-only command the file tree is unchanged.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from fanlog import JournalLogger, LoggersCollection, read_run
from fanlog.errors import BadJournalError
from fanlog.journal import readonly_uri

ODD_NAMES = ["runs [v2]#1?x%41", "a b#c d", "q?x%25y [z]", "100%", "#?"]


def fanlog_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m fanlog.cli ARGS` in a fresh interpreter, as a user would run it."""
    env = {k: v for k, v in os.environ.items() if k != "FANLOG_SAVEDIR"}
    return subprocess.run(
        [sys.executable, "-m", "fanlog.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=180,
    )


def tree(root: Path) -> dict[str, int]:
    """Every file and directory under `root` (path → size; -1 for a directory)."""
    found = {}
    for path in glob.glob(glob.escape(str(root)) + "/**", recursive=True):
        found[path] = -1 if os.path.isdir(path) else os.path.getsize(path)
    return found


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Offline W&B with every directory under tmp: nothing leaves the machine."""
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in (
        ("WANDB_MODE", "offline"),
        ("WANDB_SILENT", "true"),
        ("WANDB_ERROR_REPORTING", "false"),
    ):
        monkeypatch.setenv(name, value)
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "home" / name.lower()))
    yield


# ------------------------------------------------------------------ odd save-dir names
@pytest.mark.parametrize("name", ODD_NAMES)
def test_default_mlflow_store_is_inside_the_save_dir(name: str, tmp_path: Path) -> None:
    from fanlog.backends.mlflow import default_tracking_uri

    savedir = tmp_path / name
    url = sqlalchemy.engine.make_url(default_tracking_uri(savedir))
    assert url.get_backend_name() == "sqlite"
    assert url.database == str(savedir / "mlflow.db")
    assert not url.query  # '?' did not start options


@pytest.mark.parametrize("name", ODD_NAMES)
def test_readonly_uri_opens_that_file_and_creates_none(name: str, tmp_path: Path) -> None:
    path = tmp_path / name / "journal.sqlite"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (42)")
    conn.close()
    before = tree(tmp_path)
    with sqlite3.connect(readonly_uri(str(path)), uri=True) as reader:
        assert reader.execute("SELECT x FROM t").fetchall() == [(42,)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("INSERT INTO t VALUES (1)")
    reader.close()
    missing = tmp_path / name / "missing.sqlite"
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(readonly_uri(str(missing)), uri=True).execute("SELECT 1")
    assert tree(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("name", ODD_NAMES[:3])
def test_odd_save_dir_through_trackers_and_every_command(
    name: str, tmp_path: Path, offline_wandb: None
) -> None:
    import mlflow
    from tensorboard.backend.event_processing import event_accumulator as ea

    from fanlog.backends.mlflow import MLflowLogger, default_tracking_uri
    from fanlog.backends.tensorboard import TensorBoardLogger
    from fanlog.backends.wandb import WandBLogger

    work = tmp_path / "work"
    savedir = work / name
    members: list[Any] = [
        JournalLogger(savedir=savedir),
        MLflowLogger(savedir=savedir),
        TensorBoardLogger(savedir=savedir),
    ]
    if name == ODD_NAMES[0]:
        members.append(
            WandBLogger(
                savedir=str(savedir), mode="offline", settings={"x_disable_stats": True, "console": "off"}
            )
        )
    logger = LoggersCollection(members, savedir=savedir, job_id="odd", run_name="odd")
    logger.create_logger_context(rank=0)
    logger.save_hyperparameters({"lr": 0.1, "layers": 4})
    for step in range(12):
        logger.log(1.0 / (step + 1), "loss", step=step)
    logger.log("a note", "notes.txt", kind="text")
    assert logger.destroy_logger_context()
    journal = savedir / "runs" / "odd" / "rank-0" / "journal.sqlite"
    assert read_run(journal).metric("loss") == [(s, 1.0 / (s + 1)) for s in range(12)]

    # Every tracker wrote inside the save dir, nothing beside it.
    assert sorted(os.listdir(work)) == [name]
    client = mlflow.MlflowClient(tracking_uri=default_tracking_uri(savedir))
    (run,) = client.search_runs([client.get_experiment_by_name("fanlog").experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 12
    assert run.data.params == {"lr": "0.1", "layers": "4"}
    (events,) = glob.glob(glob.escape(str(savedir / "tensorboard")) + "/**/events.out.*", recursive=True)
    accumulator = ea.EventAccumulator(os.path.dirname(events))
    accumulator.Reload()
    assert len(accumulator.Scalars("loss")) == 12
    if name == ODD_NAMES[0]:
        assert glob.glob(glob.escape(str(savedir / "wandb")) + "/**/run-*.wandb", recursive=True)

    # Read-only commands on the journal: right answers, no file created or changed.
    before = tree(work)
    shown = fanlog_cli("show", str(journal))
    assert shown.returncode == 0, shown.stderr
    assert "loss" in shown.stdout and "layers" in shown.stdout
    exported = fanlog_cli("export", str(journal), "--format", "jsonl", "--kind", "all")
    assert exported.returncode == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == 15  # 2 params, 12 metrics, 1 text
    plotted = fanlog_cli("plot", str(journal), "-o", str(tmp_path.parent / f"{tmp_path.name}.png"))
    assert plotted.returncode == 0, plotted.stderr
    assert tree(work) == before

    # sync from the odd save dir into a new TensorBoard log dir, and into the odd one.
    logdir = work / f"{name} synced"
    synced = fanlog_cli(
        "sync", str(journal), "--to", "tensorboard", "--logdir", str(logdir), "--cursor", "copy"
    )  # a new cursor: every record again
    assert synced.returncode == 0, synced.stderr
    accumulator = ea.EventAccumulator(str(logdir))
    accumulator.Reload()
    assert len(accumulator.Scalars("loss")) == 12


@pytest.mark.slow
@pytest.mark.parametrize("name", ODD_NAMES)
def test_savedir_level_commands(name: str, tmp_path: Path) -> None:
    savedir = tmp_path / name
    with JournalLogger(savedir=savedir, job_id="lvl").start_logging(rank=0) as logger:
        logger.log(0.5, "loss")
    before = tree(tmp_path)
    listed = fanlog_cli("ls", str(savedir))
    assert listed.returncode == 0 and "lvl" in listed.stdout, listed.stderr
    shown = fanlog_cli("show", "lvl", "--savedir", str(savedir))
    assert shown.returncode == 0 and "loss" in shown.stdout, shown.stderr
    assert read_run(savedir).metric("loss") == [(0, 0.5)]
    assert tree(tmp_path) == before


# ------------------------------------------------------------------ damaged journals
def _good_journal(root: Path) -> Path:
    with JournalLogger(savedir=root, job_id="dmg").start_logging(rank=0) as logger:
        logger.save_hyperparameters({"lr": 0.1})
        for step in range(3000):
            logger.log(float(step), "loss", step=step)
        logger.log("x" * 20_000, "notes", kind="text")
    return root / "runs" / "dmg" / "rank-0" / "journal.sqlite"


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _header_only(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _garbled(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for page in range(1, len(data) // 4096):  # every page but the first: records and indexes
        data[page * 4096 : page * 4096 + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))


def _schema_garbled(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100:4096] = os.urandom(3996)  # page 1 after the header: the schema
    path.write_bytes(bytes(data))


def _text_file(path: Path) -> None:
    path.write_text("run,step,loss\nx,0,0.5\n" * 200)


def _other_sqlite(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
        conn.execute("INSERT INTO people VALUES ('ada')")
    conn.close()


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


DAMAGE = {
    "empty": _empty,
    "truncated": _truncated,
    "header-only": _header_only,
    "garbled": _garbled,
    "schema-garbled": _schema_garbled,
    "text-file": _text_file,
    "other-sqlite": _other_sqlite,
    "directory": _directory,
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_journal_gives_a_clear_error_and_stays_untouched(damage: str, tmp_path: Path) -> None:
    savedir = tmp_path / "sd"
    journal = _good_journal(savedir)
    DAMAGE[damage](journal)
    before = tree(tmp_path)
    contents = journal.read_bytes() if journal.is_file() else None
    rank_dir = str(journal.parent)
    with pytest.raises(BadJournalError, match=f"'{journal}'"):
        read_run(rank_dir)
    commands = [
        ["show", rank_dir],
        ["show", "dmg", "--savedir", str(savedir)],
        ["export", str(savedir / "runs" / "dmg"), "--kind", "all"],
        ["plot", rank_dir, "-o", str(tmp_path / "curves.png")],
        ["sync", rank_dir, "--to", "tensorboard", "--logdir", str(tmp_path / "tb")],
        ["sync", str(savedir), "--to", "tensorboard", "--logdir", str(tmp_path / "tb"), "--dry-run"],
    ]
    if damage != "directory":  # a path to the file itself, too
        commands += [["show", str(journal)], ["sync", str(journal), "--to", "tensorboard"]]
    for args in commands:
        done = fanlog_cli(*args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        assert f"Error: fanlog: cannot read the journal '{journal}'" in done.stderr, (args, done.stderr)
    listed = fanlog_cli("ls", str(savedir))
    assert listed.returncode == 0 and "unreadable" in listed.stdout, listed.stderr
    assert tree(tmp_path) == before  # no file created (no -wal, -shm, event file or PNG)
    assert (journal.read_bytes() if journal.is_file() else None) == contents


def test_logger_refuses_to_write_into_an_sqlite_file_that_is_not_a_journal(tmp_path: Path) -> None:
    journal = tmp_path / "sd" / "runs" / "taken" / "rank-0" / "journal.sqlite"
    journal.parent.mkdir(parents=True)
    _other_sqlite_at(journal)
    contents = journal.read_bytes()
    logger = JournalLogger(savedir=tmp_path / "sd", job_id="taken")
    with pytest.raises(BadJournalError, match="not a fanlog journal"):
        logger.create_logger_context(rank=0)
    assert journal.read_bytes() == contents
    with sqlite3.connect(readonly_uri(str(journal)), uri=True) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert tables == ["people"]


def _other_sqlite_at(path: Path) -> None:
    path.write_bytes(b"")
    _other_sqlite(path)


@pytest.mark.slow
def test_bad_journal_error_is_json_friendly_in_ls(tmp_path: Path) -> None:
    journal = _good_journal(tmp_path / "sd")
    _empty(journal)
    listed = fanlog_cli("ls", str(tmp_path / "sd"), "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["status"] == "unreadable (it is an empty file, not a fanlog journal)"
