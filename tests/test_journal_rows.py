"""One bad record never takes others with it: step/batch_idx checks in log(), and a writer that
sets aside a row it cannot encode or insert and writes the rest of the batch and every later one.

Read back with plain SQLite (types included), read_run and `fanlog export` as a subprocess.
"""

from __future__ import annotations

import enum
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core_backends import RecordingLogger
from fanlog import JournalLogger, LoggersCollection, read_run
from fanlog.kinds import Kind, get_kind, register_kind
from support.journals import count, fanlog_cli, query


class Phase(enum.IntEnum):
    THIRD = 3


ACCEPTED = {
    "int": (3, 3),
    "largest": (2**63 - 1, 2**63 - 1),
    "numpy-int64": (np.int64(3), 3),
    "numpy-arange-item": (np.arange(5)[3], 3),
    "numpy-uint8": (np.uint8(3), 3),
    "0d-int-tensor": (torch.tensor(3), 3),
    "1-element-int-tensor": (torch.tensor([3], dtype=torch.int32), 3),
    "int-enum": (Phase.THIRD, 3),
}
STEP_ONLY = {"integral-float": (3.0, 3), "numpy-integral-float": (np.float64(3.0), 3)}
REFUSED = {  # (value, error for step, error for batch_idx)
    "numeric-string": ("3", TypeError, TypeError),
    "fractional-float": (2.5, TypeError, TypeError),
    "huge-float": (1e20, ValueError, TypeError),
    "nan": (float("nan"), TypeError, TypeError),
    "inf": (float("inf"), TypeError, TypeError),
    "2**63": (2**63, ValueError, ValueError),
    "numpy-uint64-max": (np.uint64(2**64 - 1), ValueError, ValueError),
    "negative": (-1, ValueError, ValueError),
    "negative-numpy": (np.int64(-5), ValueError, ValueError),
    "bool": (True, TypeError, TypeError),
    "numpy-bool": (np.bool_(True), TypeError, TypeError),
    "float-tensor": (torch.tensor(3.0), TypeError, TypeError),
    "bool-tensor": (torch.tensor(True), TypeError, TypeError),
    "2-element-tensor": (torch.tensor([1, 2]), TypeError, TypeError),
    "list": ([3], TypeError, TypeError),
}


@pytest.fixture
def logger(tmp_path: Path) -> Any:
    lg = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch", flush_interval=0.05)
    lg.create_logger_context(rank=0)
    yield lg
    if lg.is_active:
        lg.destroy_logger_context()


@pytest.mark.parametrize("name", [*ACCEPTED, *STEP_ONLY])
@pytest.mark.parametrize("field", ["step", "batch_idx"])
def test_integer_like_steps_and_batch_indices_are_stored_as_integers(
    logger: Any, field: str, name: str
) -> None:
    given, expected = {**ACCEPTED, **STEP_ONLY}[name]
    if field == "batch_idx" and name in STEP_ONLY:
        with pytest.raises(TypeError, match=r"identifier='x'.*batch_idx"):
            logger.log(1.0, "x", batch_idx=given)
        return
    logger.log(1.0, "x", **{field: given})
    assert logger.flush(timeout=30)
    rows = query(logger.journal_path, f"SELECT {field}, typeof({field}) FROM records")
    assert rows == [(expected, "integer")]
    (record,) = read_run(logger.journal_path).records
    assert getattr(record, field) == expected and type(getattr(record, field)) is int


@pytest.mark.parametrize("name", list(REFUSED))
@pytest.mark.parametrize("field", ["step", "batch_idx"])
def test_bad_steps_and_batch_indices_are_clear_errors(logger: Any, field: str, name: str) -> None:
    given, step_error, batch_error = REFUSED[name]
    error = step_error if field == "step" else batch_error
    logger.log(1.0, "before", step=0)
    with pytest.raises(error) as raised:
        logger.log(1.0, "train/loss", **{field: given})
    assert "identifier='train/loss'" in str(raised.value) and field in str(raised.value)
    if field == "batch_idx":  # also when the gate would have dropped the call
        gated = JournalLogger(savedir=logger.savedir, log_freq=1000, job_id="gated")
        gated.create_logger_context(rank=0)
        with pytest.raises(error):
            gated.log(1.0, "train/loss", batch_idx=given)
        gated.destroy_logger_context()
    logger.log(2.0, "after", step=0)
    assert logger.flush(timeout=30)
    assert [r.key for r in read_run(logger.journal_path).records] == ["before", "after"]


@pytest.mark.slow
def test_numpy_batch_indices_export_as_numbers(tmp_path: Path) -> None:
    savedir = tmp_path / "sd"
    logger = JournalLogger(savedir=str(savedir), log_freq="batch", job_id="np")
    logger.create_logger_context(rank=0)
    for batch_idx in np.arange(6):
        logger.log(float(batch_idx), "loss", step=np.int64(batch_idx), batch_idx=batch_idx)
    logger.destroy_logger_context()
    lines = fanlog_cli("export", str(savedir / "runs" / "np"), "--format", "jsonl").stdout
    rows = [json.loads(line) for line in lines.splitlines()]
    assert [(r["step"], r["batch_idx"]) for r in rows] == [(i, i) for i in range(6)]
    pytest.importorskip("pyarrow")
    import pandas as pd

    target = tmp_path / "out.parquet"
    fanlog_cli("export", str(savedir / "runs" / "np"), "--format", "parquet", "-o", str(target))
    assert pd.read_parquet(target)["batch_idx"].tolist() == list(range(6))


# ------------------------------------------------------------------ the writer's isolation
def _fragile(value: Any) -> Any:
    if value == "bad":
        raise ValueError("cannot encode this one")
    return value


register_kind(Kind("fragile", lambda item, key: item, "json", finalize=_fragile), replace=True)


def collection(tmp_path: Path) -> tuple[LoggersCollection, RecordingLogger]:
    recording = RecordingLogger(savedir=str(tmp_path / "sd"))
    logger = LoggersCollection(
        [JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch"), recording],
        unsupported="ignore",
        flush_interval=0.05,
    )
    logger.create_logger_context(rank=0)
    return logger, recording


def test_rows_that_fail_to_encode_are_set_aside_and_the_rest_is_written(tmp_path: Path) -> None:
    logger, recording = collection(tmp_path)
    bad_at = {7, 300, 4999, 5000, 9000}
    for i in range(10_000):
        logger.log(float(i), "loss", step=i)
        logger.log("bad" if i in bad_at else f"ok {i}", f"notes/{i % 3}", kind="fragile")
    assert logger.flush(timeout=60)
    errors = logger.delivery_errors()["journal"]
    assert logger.unstored == len(bad_at) == len(errors)
    assert all("cannot encode this one" in e for e in errors)
    path = logger.journal_path
    with pytest.warns(RuntimeWarning, match="could not be stored"):
        logger.destroy_logger_context()
    assert count(path, "loss") == 10_000
    assert int(query(path, "SELECT COUNT(*) FROM records WHERE kind = 'fragile'")[0][0]) == 10_000 - 5
    aside = query(path, "SELECT kind, key, step, reason FROM unstored ORDER BY rowid")
    assert [(k, key, int(step)) for k, key, step, _ in aside] == [
        ("fragile", f"notes/{i % 3}", _auto_step(i)) for i in sorted(bad_at)
    ]
    assert all("cannot encode this one" in reason for *_, reason in aside)
    assert [r.value for r in recording.instance.records] == [float(i) for i in range(10_000)]


def _auto_step(i: int) -> int:
    """The automatic step of the i-th fragile record: each of the 3 keys counts its own calls."""
    return i // 3


BAD_ROWS = {  # rows built by code other than log() (which would refuse them), as SQLite sees them
    "step-overflow": {"step": 2**64},
    "batch-idx-object": {"batch_idx": object()},
    "key-none": {"key": None},
    "step-none": {"step": None},
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_rows_that_fail_to_insert_are_set_aside_and_later_batches_written(tmp_path: Path, case: str) -> None:
    logger, recording = collection(tmp_path)
    pipeline = logger._pipeline
    metric = get_kind("metric")
    mask = sum(slot.bit for slot in pipeline.slots)

    def submit(i: int, **bad: Any) -> None:
        row = {"key": "loss", "step": i, "batch_idx": None, **bad}
        pipeline.submit(
            (metric, row["key"], float(i), row["step"], row["batch_idx"], 0, time.time(), mask, None)
        )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in range(3):  # one bad row in each of three batches, one batch of 12 000
            size = 12_000 if batch == 1 else 300
            for i in range(size):
                submit(batch * 100_000 + i, **(BAD_ROWS[case] if i == size // 2 else {}))
            assert logger.flush(timeout=60)
    assert not any("cannot write the journal" in str(w.message) for w in caught)
    assert logger.unstored == 3 and pipeline.journal_error is None
    path = logger.journal_path
    with pytest.warns(RuntimeWarning, match="could not be stored"):
        logger.destroy_logger_context()
    assert count(path) == 300 + 12_000 + 300 - 3
    reasons = [r for (r,) in query(path, "SELECT reason FROM unstored")]
    assert len(reasons) == 3 and all(reasons)
    assert len(recording.instance.records) == count(path)
