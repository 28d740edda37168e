"""A collection's members: a logger listed twice (also through nested collections) logs
once, with a warning; a journal member whose savedir differs from the collection's is
said to record into the collection's journal. Counted in the journal and in TensorBoard's
own reader."""

from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path

import pytest

import fanlog
from fanlog import JournalLogger, LoggersCollection

tb = pytest.importorskip("tensorboard")


def tensorboard_scalars(savedir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing import event_accumulator as ea

    steps = []
    for events in glob.glob(str(savedir / "**" / "events.out.*"), recursive=True):
        accumulator = ea.EventAccumulator(os.path.dirname(events))
        accumulator.Reload()
        if tag in accumulator.Tags().get("scalars", []):
            steps += [event.step for event in accumulator.Scalars(tag)]
    return sorted(steps)


@pytest.mark.parametrize("nesting", ["flat", "nested", "three-times"])
def test_a_logger_listed_twice_logs_once_with_a_warning(tmp_path: Path, nesting: str) -> None:
    savedir = tmp_path / "sd"
    board = fanlog.TensorBoardLogger(savedir=str(savedir), log_freq="batch")
    members: list[fanlog.Logger] = {
        "flat": [board, board],
        "nested": [board, LoggersCollection([board], savedir=str(savedir))],
        "three-times": [board, LoggersCollection([board, board], savedir=str(savedir))],
    }[nesting]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = LoggersCollection(members, savedir=str(savedir))
    said = [str(w.message) for w in caught if "listed" in str(w.message)]
    assert said and "TensorBoardLogger" in said[0] and "once" in said[0], said
    assert logger.members() == [board]
    logger.create_logger_context(rank=0)
    for step in range(10):
        logger.log(float(step), "loss", step=step)
    assert logger.destroy_logger_context() is True
    assert tensorboard_scalars(savedir, "loss") == list(range(10))  # once each, one run
    assert len(fanlog.read_run(str(logger.journal_path)).metric("loss")) == 10


@pytest.mark.parametrize("other", ["elsewhere", "sub/dir"])
def test_a_journal_member_with_another_savedir_is_told_where_it_records(tmp_path: Path, other: str) -> None:
    savedir, elsewhere = tmp_path / "sd", tmp_path / other
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        members = [JournalLogger(savedir=str(savedir)), JournalLogger(savedir=str(elsewhere))]
        logger = LoggersCollection(members, savedir=str(savedir))
    said = [str(w.message) for w in caught if str(elsewhere) in str(w.message)]
    assert said and str(savedir) in said[0], [str(w.message) for w in caught]
    logger.create_logger_context(rank=0)
    logger.log(1.0, "loss", step=0)
    assert logger.destroy_logger_context() is True
    assert len(fanlog.read_run(str(savedir)).metric("loss")) == 1
    assert not elsewhere.exists()  # as the warning says: nothing there


def test_members_with_the_default_or_the_same_savedir_are_not_warned_about(tmp_path: Path) -> None:
    savedir = tmp_path / "sd"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LoggersCollection(
            [
                JournalLogger(),
                JournalLogger(savedir=str(savedir)),
                fanlog.TensorBoardLogger(savedir=str(tmp_path / "tb")),
            ],
            savedir=str(savedir),
        )
    assert [str(w.message) for w in caught] == []
