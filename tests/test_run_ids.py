"""A run id names the directory `<savedir>/runs/<run id>`: one that is not a single
directory name (a '/', '..', a NUL, ...) is refused with an error that says where it came
from, before anything is written, so no run lands outside the save dir or out of sight of
`fanlog ls` and `fanlog sync`. Ids that are fine keep working."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fanlog import JournalLogger, LoggersCollection, read_run
from support.journals import fanlog_cli

BAD_IDS = [
    "sweep/trial-3",
    "../../escaped",
    "..",
    ".",
    "x\x00y",
    "a\\b",
    "line\nbreak",
    "   ",
    " padded",
    "x" * 201,
    "/abs",
]


def files_under(root: Path) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs}


@pytest.mark.parametrize("bad", BAD_IDS, ids=[repr(b)[:20] for b in BAD_IDS])
def test_a_bad_job_id_is_refused_at_construction_naming_it(tmp_path: Path, bad: str) -> None:
    savedir = tmp_path / "box" / "sd"
    with pytest.raises(ValueError, match="job_id .* cannot be a run id") as caught:
        JournalLogger(savedir=savedir, job_id=bad)
    assert "one directory name" in str(caught.value)
    with pytest.raises(ValueError, match="cannot be a run id"):
        LoggersCollection([JournalLogger(savedir=savedir)], job_id=bad)
    assert files_under(tmp_path) == set()  # nothing written anywhere


@pytest.mark.parametrize("bad", ["sweep/trial-3", "../../escaped", "..", "x\ny"])
def test_a_bad_fanlog_run_id_is_refused_at_create_naming_the_variable(
    tmp_path: Path, bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANLOG_RUN_ID", bad)
    logger = JournalLogger(savedir=tmp_path / "box" / "sd")
    with pytest.raises(ValueError, match="FANLOG_RUN_ID .* cannot be a run id"):
        logger.create_logger_context(rank=0)
    assert not logger.is_active
    assert not any("journal" in f for f in files_under(tmp_path))


@pytest.mark.parametrize(
    "good", ["slurm-42.0", "sweep-trial-3", "run 1", "ünïcode-λ", "a=b,c", "x" * 200, "[bracket]"]
)
def test_good_run_ids_are_seen_by_every_reader(tmp_path: Path, good: str) -> None:
    savedir = tmp_path / "sd"
    logger = JournalLogger(savedir=savedir, job_id=good, log_freq="batch")
    logger.create_logger_context(rank=0)
    for i in range(10):
        logger.log(float(i), "loss", step=i)
    assert logger.destroy_logger_context() is True
    assert os.path.dirname(os.path.dirname(str(logger.journal_path))) == str(savedir / "runs" / good)
    assert len(read_run(savedir).metric("loss")) == 10
    listed = fanlog_cli("ls", str(savedir))
    assert listed.stdout.count("finished") == 1 and "10" in listed.stdout, listed.stdout


def test_an_empty_job_id_means_not_given(tmp_path: Path) -> None:
    logger = JournalLogger(savedir=tmp_path / "sd", job_id="", log_freq="batch")
    logger.create_logger_context(rank=0)
    logger.log(1.0, "loss", step=0)
    assert logger.destroy_logger_context() is True
    assert logger.run_info is not None and logger.run_info.run_id  # a generated id
    assert len(read_run(tmp_path / "sd").metric("loss")) == 1
