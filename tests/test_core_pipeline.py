"""Lifecycle, flush/destroy semantics, backend isolation, retries, strict mode, backpressure."""

from __future__ import annotations

import sqlite3
import warnings

import pytest

import fanlog
from core_backends import RecordingBackend, RecordingLogger
from fanlog import JournalLogger, LoggersCollection
from fanlog.errors import BackendError, LoggerNotStartedError
from fanlog.kinds import Kind, register_kind
from fanlog.record import RunStatus


def test_log_before_create_is_a_clear_error(tmp_path):
    logger = JournalLogger(savedir=tmp_path)
    with pytest.raises(LoggerNotStartedError, match=r"log\(\) called before create_logger_context"):
        logger.log(1.0, "m")


def test_log_after_destroy_is_a_clear_error(tmp_path):
    logger = JournalLogger(savedir=tmp_path)
    logger.create_logger_context()
    logger.destroy_logger_context()
    with pytest.raises(LoggerNotStartedError, match="after destroy_logger_context"):
        logger.log(1.0, "m")


def test_create_twice_warns_and_keeps_the_run(tmp_path):
    logger = JournalLogger(savedir=tmp_path, log_freq="batch")
    logger.create_logger_context()
    first = logger.journal_path
    with pytest.warns(RuntimeWarning, match="called twice"):
        logger.create_logger_context()
    assert logger.journal_path == first
    logger.log(1.0, "m")
    logger.destroy_logger_context()
    assert fanlog.read_run(tmp_path).metric("m") == [(0, 1.0)]


def test_flush_makes_records_durable_and_delivered(tmp_path):
    recording = RecordingLogger(savedir=tmp_path)
    collection = LoggersCollection([JournalLogger(savedir=tmp_path, log_freq="batch"), recording])
    collection.create_logger_context()
    for i in range(2500):
        collection.log(float(i), "loss")
    assert collection.flush(timeout=30)
    # durable: another connection sees every record before destroy
    with sqlite3.connect(collection.journal_path) as other:
        assert other.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 2500
    assert [r.value for r in recording.instance.records] == [float(i) for i in range(2500)]
    assert [r.step for r in recording.instance.records][:3] == [0, 1, 2]
    collection.destroy_logger_context()
    assert recording.instance.status is RunStatus.FINISHED


def test_exception_in_start_logging_marks_failed(tmp_path):
    recording = RecordingLogger(savedir=tmp_path)
    with pytest.raises(ZeroDivisionError), recording.start_logging():
        recording.log(1.0, "m")
        _ = 1 / 0
    assert recording.instance.status is RunStatus.FAILED
    assert fanlog.read_run(tmp_path).meta[0]["status"] == "failed"
    assert len(recording.instance.records) == 1


def test_broken_backend_never_reaches_caller_nor_other_members(tmp_path):
    broken = RecordingLogger(savedir=tmp_path, backend=RecordingBackend(always_fail=True), name="broken")
    healthy = RecordingLogger(savedir=tmp_path, name="healthy")
    collection = LoggersCollection([broken, healthy], close_timeout=2.0, down_after=0.5)
    collection.create_logger_context()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(50):
            collection.log(float(i), "loss")
        collection.flush(timeout=10)
        done = collection.destroy_logger_context()
    assert not done
    assert len(healthy.instance.records) == 50
    assert broken.instance.records == []
    errors = collection.delivery_errors()["broken"]
    assert errors and "tracker unreachable" in errors[0]
    messages = [str(w.message) for w in caught]
    assert sum("backend 'broken' failed" in m for m in messages) == 1  # reported once
    summary = [m for m in messages if "ended with problems" in m]
    assert summary and "fanlog sync" in summary[0] and "broken" in summary[0]
    # the journal still holds everything the broken backend missed
    journal = fanlog.read_run(tmp_path)
    assert len(journal.metrics) == 50
    with sqlite3.connect(collection.journal_path) as db:  # what `fanlog ls` shows
        delivery = dict(db.execute("SELECT name, error FROM delivery").fetchall())
    assert "tracker unreachable" in delivery["broken"] and delivery["healthy"] is None


def test_transient_failures_are_retried_without_loss_or_duplicates(tmp_path):
    flaky = RecordingLogger(savedir=tmp_path, backend=RecordingBackend(fail_times=3), retry_initial=0.01)
    flaky.create_logger_context()
    for i in range(100):
        flaky.log(float(i), "x")
    assert flaky.flush(timeout=20)
    flaky.destroy_logger_context()
    assert [r.value for r in flaky.instance.records] == [float(i) for i in range(100)]
    assert flaky.instance.calls >= 4


def test_strict_mode_raises_backend_errors(tmp_path):
    broken = RecordingLogger(
        savedir=tmp_path,
        backend=RecordingBackend(always_fail=True),
        strict=True,
        close_timeout=1.0,
        down_after=0.5,
    )
    broken.create_logger_context()
    broken.log(1.0, "m")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BackendError, match="tracker unreachable"):
            broken.flush(timeout=5)
        with pytest.raises(BackendError, match="tracker unreachable"):
            broken.log(2.0, "m")
            broken.flush(timeout=5)
        with pytest.raises(BackendError):  # strict: destroy reports the failure too
            broken.destroy_logger_context()
    assert not broken.is_active


def test_backpressure_bound_drops_and_counts(tmp_path):
    import time

    def slow(value):
        time.sleep(0.02)
        return value

    register_kind(Kind("slow_text", lambda item, key: str(item), "json", finalize=slow), replace=True)
    logger = JournalLogger(savedir=tmp_path, log_freq="batch", max_pending=5, max_block=0.005)
    logger.create_logger_context()
    with pytest.warns(RuntimeWarning, match="records are being dropped"):
        for i in range(200):
            logger.log(i, "t", kind="slow_text")
    dropped = logger.dropped
    assert dropped > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger.destroy_logger_context()
    assert len(fanlog.read_run(tmp_path).of_kind("slow_text")) == 200 - dropped


def test_steps_count_per_key_when_not_given(tmp_path):
    logger = JournalLogger(savedir=tmp_path, log_freq="batch")
    with logger.start_logging():
        for _ in range(3):
            logger.log(1.0, "a")
        logger.log(1.0, "b")
        logger.log(1.0, "a", step=10)
        logger.log(1.0, "a")
    run = fanlog.read_run(tmp_path)
    assert [s for s, _ in run.metric("a")] == [0, 1, 2, 10, 11]
    assert [s for s, _ in run.metric("b")] == [0]


@pytest.mark.parametrize(("step", "error"), [(-1, ValueError), ("3", TypeError), (1.5, TypeError)])
def test_bad_steps(tmp_path, step, error):
    logger = JournalLogger(savedir=tmp_path)
    with logger.start_logging(), pytest.raises(error, match="step as an int >= 0"):
        logger.log(1.0, "m", step=step)


def test_epochs_are_recorded(tmp_path):
    logger = JournalLogger(savedir=tmp_path, log_freq="batch")
    with logger.start_logging():
        logger.log(1.0, "m")
        logger.end_epoch()
        logger.log(2.0, "m")
    assert [m.epoch for m in fanlog.read_run(tmp_path).metrics] == [0, 1]


def test_journal_and_savedir_are_owner_only(tmp_path):
    import os
    import stat

    logger = JournalLogger(savedir=tmp_path / "out")
    with logger.start_logging():
        logger.log(1.0, "m")
    assert stat.S_IMODE(os.stat(logger.journal_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == 0o700


def test_unwritable_savedir_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    logger = JournalLogger(savedir=blocker / "sub")
    with pytest.raises(OSError, match="cannot create the save dir.*sub"):
        logger.create_logger_context()


def test_automatic_steps_continue_after_a_restart(tmp_path):
    """A second process (here: a second context) on the same job id resumes the step count."""
    for _ in range(2):
        logger = JournalLogger(savedir=tmp_path, log_freq="batch", job_id="resumable")
        with logger.start_logging():
            logger.log(1.0, "loss")
            logger.log(2.0, "loss")
    assert [s for s, _ in fanlog.read_run(tmp_path).metric("loss")] == [0, 1, 2, 3]
