"""A tracker is one file: a backend that lives outside fanlog (tests/support/third_party_backend.py),
registered the way third parties register theirs, then used from a config file, from
``fanlog sync --to notes`` in a fresh process, and in a LoggersCollection. Every test reads
back what the tracker stored and counts it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanlog
from fanlog import backend as registry
from fanlog.backends.journal import JournalLogger
from fanlog.config import ConfigError, from_config, json_schema
from fanlog.logger import LoggersCollection
from support import third_party_backend
from support.third_party_backend import read_notes

SOURCE = Path(third_party_backend.__file__)


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test stay in that test."""
    monkeypatch.setattr(registry, "_REGISTERED", {})


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The tracker as an installed distribution would be: a module and a ``*.dist-info`` whose
    entry_points.txt declares ``notes`` in the ``fanlog.backends`` group, on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(SOURCE, site / "notes_tracker.py")
    info = site / "notes_tracker-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: notes-tracker\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[fanlog.backends]\nnotes = notes_tracker:NotesLogger\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("notes_tracker", None)


def log_a_run(logger: Any, steps: int = 4) -> None:
    with logger.start_logging(rank=0):
        logger.save_hyperparameters({"lr": 0.1})
        for step in range(steps):
            logger.log(1.0 / (step + 1), "loss", step=step)
        logger.log("hello", "note", kind="text")
        logger.log([1.0, 2.0], "weights", kind="histogram")  # not a notes kind


def test_registered_by_name_and_used_from_a_config(tmp_path: Path, fresh_registry: None) -> None:
    fanlog.register_backend("notes", "support.third_party_backend:NotesLogger")
    out = tmp_path / "out"
    logger = from_config(
        {
            "savedir": str(tmp_path / "logs"),
            "unsupported": "ignore",
            "loggers": [
                {"type": "journal", "log_freq": "batch"},
                {"type": "notes", "folder": str(out), "digits": 2},
            ],
        }
    )
    journal, notes = logger.members()
    assert type(notes).__name__ == "NotesLogger" and notes.folder == str(out) and notes.digits == 2
    log_a_run(logger)
    stored = read_notes(out)
    assert [(n["key"], n["value"]) for n in stored if n.get("kind") == "metric"] == [
        ("loss", 1.0),
        ("loss", 0.5),
        ("loss", 0.33),
        ("loss", 0.25),
    ]
    assert [n["key"] for n in stored if n.get("kind") == "param"] == ["lr"]
    assert [n["value"] for n in stored if n.get("kind") == "text"] == ["hello"]
    assert stored[-1] == {"status": "finished"} and len(stored) == 7
    assert len(fanlog.read_run(logger.journal_path).records) == 7  # the histogram too
    with pytest.raises(ConfigError, match="unknown option 'digit' \\(did you mean 'digits'\\?\\)"):
        from_config({"type": "notes", "digit": 3})
    with pytest.raises(ValueError, match="already registered"):
        fanlog.register_backend("notes", third_party_backend.NotesLogger)


def test_entry_point_found_without_importing_the_package(
    tmp_path: Path, installed: Path, fresh_registry: None
) -> None:
    assert "notes_tracker" not in sys.modules
    assert "notes" in registry.known_backends()
    assert "backend-notes" in json_schema()["$defs"]
    out = tmp_path / "out"
    collection = LoggersCollection(
        [
            JournalLogger(savedir=str(tmp_path / "logs"), log_freq="batch"),
            from_config({"type": "notes", "folder": str(out)}),
        ],
        unsupported="ignore",
    )
    log_a_run(collection, steps=3)
    assert registry.backend_type("notes").__module__ == "notes_tracker"
    stored = read_notes(out)
    assert [n["step"] for n in stored if n.get("kind") == "metric"] == [0, 1, 2]
    assert len(stored) == 6 and stored[-1] == {"status": "finished"}


def run_cli(*args: str, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "fanlog.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


@pytest.mark.slow
def test_fanlog_sync_to_an_entry_point_tracker(tmp_path: Path, installed: Path) -> None:
    """A journal-only run, delivered later by `fanlog sync --to notes` in a fresh process that
    finds the tracker through its entry point; a second sync sends nothing twice."""
    logger = JournalLogger(savedir=str(tmp_path / "logs"), log_freq="batch")
    log_a_run(logger, steps=5)
    out = tmp_path / "synced"
    first = run_cli(
        "sync",
        str(tmp_path / "logs"),
        "--to",
        "notes",
        "-o",
        f"folder={out}",
        "-o",
        "digits=3",
        "--no-progress",
        site=installed,
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    stored = read_notes(out)
    kinds = [n.get("kind") for n in stored]
    assert kinds.count("metric") == 5 and kinds.count("param") == 1 and kinds.count("text") == 1
    assert [n["value"] for n in stored if n.get("kind") == "metric"][2] == 0.333
    again = run_cli(
        "sync",
        str(tmp_path / "logs"),
        "--to",
        "notes",
        "-o",
        f"folder={out}",
        "--no-progress",
        site=installed,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert [n.get("kind") for n in read_notes(out)].count("metric") == 5
    typo = run_cli("sync", str(tmp_path / "logs"), "--to", "notez", site=installed, cwd=tmp_path)
    assert typo.returncode != 0 and "did you mean 'notes'" in typo.stderr
    bad = run_cli(
        "sync", str(tmp_path / "logs"), "--to", "notes", "-o", "digits=many", site=installed, cwd=tmp_path
    )
    assert bad.returncode != 0 and "digits: expected integer, got str 'many'" in bad.stderr
