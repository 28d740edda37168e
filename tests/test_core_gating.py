"""log_freq × batch_idx × rank, with itwinai's semantics, read back from the journal."""

from __future__ import annotations

import pytest

import fanlog
from fanlog import JournalLogger, LoggersCollection
from fanlog.logger import rank_logs, validate_log_freq

# (log_freq, batch_idx, logged?)
FREQ_CASES = [
    ("batch", None, True),
    ("batch", 0, True),
    ("batch", 7, True),
    ("epoch", None, True),
    ("epoch", 0, False),
    ("epoch", 5, False),
    (1, 3, True),
    (5, 0, True),
    (5, 4, False),
    (5, 10, True),
    (5, None, True),
    (3, 9, True),
    (3, 10, False),
]


@pytest.mark.parametrize(("log_freq", "batch_idx", "logged"), FREQ_CASES)
def test_log_freq_semantics(tmp_path, log_freq, batch_idx, logged):
    logger = JournalLogger(savedir=tmp_path, log_freq=log_freq)
    assert logger.should_log(batch_idx) is logged
    with logger.start_logging():
        logger.log(1.0, "m", batch_idx=batch_idx)
    stored = fanlog.read_run(tmp_path).metric("m")
    assert len(stored) == (1 if logged else 0)


# (log_on_workers, rank, logged?)
RANK_CASES = [
    (0, 0, True),
    (0, 1, False),
    (-1, 0, True),
    (-1, 3, True),
    ([0, 2], 2, True),
    ([0, 2], 1, False),
    (1, 1, True),
    (1, 0, False),
]


@pytest.mark.parametrize(("workers", "rank", "logged"), RANK_CASES)
def test_log_on_workers(tmp_path, workers, rank, logged):
    assert rank_logs(workers, rank) is logged
    logger = JournalLogger(savedir=tmp_path, log_freq="batch", log_on_workers=workers)
    with logger.start_logging(rank=rank):
        logger.log(2.0, "m", batch_idx=0)
    assert len(fanlog.read_run(tmp_path).metric("m")) == (1 if logged else 0)


@pytest.mark.parametrize("bad", ["step", 0, -3, 1.5, None, True, [1]])
def test_bad_log_freq_says_what_is_accepted(bad):
    with pytest.raises(ValueError, match="'batch', 'epoch' or an int > 0"):
        validate_log_freq(bad)


@pytest.mark.parametrize("bad", [-2, "all", [0, -1], 1.0])
def test_bad_log_on_workers(bad):
    with pytest.raises(ValueError, match="log_on_workers"):
        JournalLogger(log_on_workers=bad)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RANK": "3"}, 3),
        ({"SLURM_PROCID": "2"}, 2),
        ({"OMPI_COMM_WORLD_RANK": "5"}, 5),
        ({"PMI_RANK": "1"}, 1),
        ({}, 0),
    ],
)
def test_rank_from_environment(tmp_path, monkeypatch, env, expected):
    for name in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    logger = JournalLogger(savedir=tmp_path, log_on_workers=-1)
    with logger.start_logging():
        assert logger.rank == expected
    assert f"rank-{expected}" in logger.journal_path


def test_argument_rank_wins_over_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "4")
    logger = JournalLogger(savedir=tmp_path, log_on_workers=-1)
    logger.create_logger_context(rank=1)
    assert logger.rank == 1
    logger.destroy_logger_context()


def test_collection_members_keep_their_own_gates(tmp_path):
    from core_backends import RecordingLogger

    every = RecordingLogger(savedir=tmp_path, log_freq="batch")
    fifth = RecordingLogger(savedir=tmp_path, log_freq=5)
    epoch = RecordingLogger(savedir=tmp_path, log_freq="epoch")
    other_rank = RecordingLogger(savedir=tmp_path, log_freq="batch", log_on_workers=1)
    collection = LoggersCollection([every, fifth, epoch, other_rank])
    with collection.start_logging(rank=0):
        for batch_idx in range(10):
            collection.log(float(batch_idx), "loss", batch_idx=batch_idx)
        collection.log(9.9, "epoch_loss")
    assert len(every.instance.records) == 11
    assert [r.value for r in fifth.instance.records] == [0.0, 5.0, 9.9]
    assert [r.key for r in epoch.instance.records] == ["epoch_loss"]
    assert other_rank.instance.records == [] and other_rank.instance.opened is None
    # the journal holds the union, once each
    assert len(fanlog.read_run(tmp_path).metrics) == 11
