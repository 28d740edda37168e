"""The journal writer survives what one record or one bug can throw at it (review 12, A1, A2).

- keyword options JSON cannot hold: that record is set aside in ``unstored`` with a reason
  naming the option, and every later record is written and delivered;
- an identifier holding a lone surrogate (``os.fsdecode`` of a name that is not UTF-8): the
  record is stored with the surrogate escaped, said once, never an endless outage;
- a fault in the writer itself: retried, then that batch set aside; when it keeps failing,
  the writer stops and flush() and destroy return False instead of claiming success.

Counts are read back from the journal with plain SQLite, and from what the tracker received.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from core_backends import RecordingLogger
from fanlog import JournalLogger, LoggersCollection
from fanlog.pipeline import WRITER_RETRIES
from support.journals import count, meta, query


class StrRaises:
    def __str__(self) -> str:
        raise RuntimeError("no text for this object")


class StrNotText:
    def __str__(self) -> str:
        return 5  # type: ignore[return-value]


class NothingRenders:
    def __str__(self) -> str:
        raise KeyError("str")

    def __repr__(self) -> str:
        raise KeyError("repr")


BAD_OPTIONS = {
    "huge-int": 10**5000,
    "str-raises": StrRaises(),
    "str-and-repr-raise": NothingRenders(),
    "nested-huge-int": [1, {"deep": 10**5000}],
    "str-returns-non-str": StrNotText(),
}


def collection(tmp_path: Path) -> tuple[LoggersCollection, RecordingLogger]:
    recording = RecordingLogger(savedir=str(tmp_path / "sd"))
    logger = LoggersCollection(
        [JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch"), recording],
        unsupported="ignore",
        flush_interval=0.05,
    )
    logger.create_logger_context(rank=0)
    return logger, recording


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_an_option_json_cannot_hold_sets_that_record_aside_and_the_writer_goes_on(
    tmp_path: Path, case: str
) -> None:
    logger, recording = collection(tmp_path)
    for i in range(100):
        logger.log(float(i), "train/loss", step=i)
    logger.log(0.5, "val/acc", step=0, note=BAD_OPTIONS[case])  # accepted: never raises here
    logger.log(0.7, "val/acc", step=1, note="fine", epoch_tag=3)
    for i in range(100, 1100):
        logger.log(float(i), "train/loss", step=i)
    assert logger.flush(timeout=60)
    assert logger.unstored == 1
    (error,) = logger.delivery_errors()["journal"]
    assert "val/acc" in error and "keyword option" in error and "note" in error
    path = logger.journal_path
    with pytest.warns(RuntimeWarning, match="could not be stored"):
        logger.destroy_logger_context()
    assert count(path, "train/loss") == 1100 and count(path, "val/acc") == 1
    assert query(path, "SELECT options FROM records WHERE key = 'val/acc'") == [
        ('{"note": "fine", "epoch_tag": 3}',)
    ]
    ((key, step, reason),) = query(path, "SELECT key, step, reason FROM unstored")
    assert (key, int(step)) == ("val/acc", 0) and "keyword option 'note'" in reason
    assert meta(path)["status"] == "finished"
    received = recording.instance.records
    assert len(received) == 1101 and received[100].options == {"note": "fine", "epoch_tag": 3}


SURROGATES = {  # identifier given -> as stored and delivered
    "fsdecoded-byte": (os.fsdecode(b"acc_\xff"), "acc_\\xff"),
    "fsdecoded-two-bytes": (os.fsdecode(b"val/\xe9t\xe9"), "val/\\xe9t\\xe9"),
    "lone-high": ("loss\ud83d", "loss\\ud83d"),
    "lone-low-alone": ("\udfff", "\\udfff"),
}


@pytest.mark.parametrize("case", list(SURROGATES))
@pytest.mark.parametrize("kind", ["metric", "text"])
def test_an_identifier_with_a_lone_surrogate_is_stored_escaped_and_never_an_outage(
    tmp_path: Path, case: str, kind: str
) -> None:
    given, stored = SURROGATES[case]
    logger, recording = collection(tmp_path)
    for i in range(100):
        logger.log(float(i), "train/loss", step=i)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.log(0.9 if kind == "metric" else "note", given, kind=kind, step=0)
        logger.log(0.8 if kind == "metric" else "again", given, kind=kind, step=1)
        for i in range(100, 1100):
            logger.log(float(i), "train/loss", step=i)
        assert logger.flush(timeout=60)
        logger.log(1.0, "after", step=0)  # a warning queued by the writer surfaces on a call
    messages = [str(w.message) for w in caught]
    assert not any("cannot write the journal" in m for m in messages)
    assert sum("not valid Unicode text" in m and repr(stored) in m for m in messages) == 1
    path = logger.journal_path
    assert logger.destroy_logger_context()
    assert count(path, "train/loss") == 1100 and count(path) == 1103
    assert query(
        path,
        "SELECT key, step FROM records WHERE kind = ? AND key NOT IN ('train/loss', 'after') ORDER BY seq",
        kind,
    ) == [(stored, 0), (stored, 1)]
    assert query(path, "SELECT COUNT(*) FROM unstored") == [(0,)]
    assert [r.key for r in recording.instance.records if r.key.startswith(stored[:2])] == [stored, stored]
    assert len(recording.instance.records) == 1103


@pytest.mark.parametrize("faults", [1, 2, 3])
def test_a_fault_in_the_writer_is_retried_then_its_batch_set_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faults: int
) -> None:
    logger, recording = collection(tmp_path)
    journal = logger._pipeline.journal
    encode = journal.encode
    left = {"faults": faults}

    def faulty_encode(*args: Any, **kwargs: Any) -> Any:
        # A fanlog bug cannot be produced on demand: this stands in for one (a fault injection).
        if left["faults"]:
            left["faults"] -= 1
            raise RuntimeError("a bug in the writer")
        return encode(*args, **kwargs)

    logger.log(-1.0, "before", step=0)
    assert logger.flush(timeout=60)
    monkeypatch.setattr(journal, "encode", faulty_encode)
    with pytest.warns(RuntimeWarning, match="the journal writer failed"):
        for i in range(500):
            logger.log(float(i), "train/loss", step=i)
        assert logger.flush(timeout=60)
        for i in range(500, 1000):
            logger.log(float(i), "train/loss", step=i)
        assert logger.flush(timeout=60)
    errors = logger.delivery_errors()["journal"]
    assert len(errors) == faults and all("a bug in the writer" in e for e in errors)
    path = logger.journal_path
    aside = 0 if faults == 1 else logger.unstored
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger.destroy_logger_context()
    assert count(path, "train/loss") + aside == 1000 and count(path, "before") == 1
    assert query(path, "SELECT COUNT(*) FROM unstored") == [(aside,)]
    if faults > 1:  # the batch it failed on twice is described in `unstored`, with the reason
        assert aside > 0
        assert all("a bug in the writer" in r for (r,) in query(path, "SELECT reason FROM unstored"))
    assert len(recording.instance.records) == count(path)


def test_a_writer_that_keeps_failing_stops_and_flush_and_destroy_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, recording = collection(tmp_path)
    for i in range(50):
        logger.log(float(i), "train/loss", step=i)
    assert logger.flush(timeout=60)
    journal = logger._pipeline.journal

    def broken_encode(*args: Any, **kwargs: Any) -> Any:
        # Stands in for a fanlog bug that recurs on every batch (a fault injection).
        raise RuntimeError("a bug that stays")

    monkeypatch.setattr(journal, "encode", broken_encode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flushed = []
        for round_ in range(WRITER_RETRIES + 3):  # each failure sets a batch aside, until it stops
            for i in range(100):
                logger.log(float(i), "train/loss", step=50 + 100 * round_ + i)
            flushed.append(logger.flush(timeout=30))
        path = logger.journal_path
        assert not logger.destroy_logger_context()
    assert flushed[0] and not flushed[-1]
    assert flushed == sorted(flushed, reverse=True)  # once stopped, never True again
    messages = [str(w.message) for w in caught]
    assert any(f"failed {WRITER_RETRIES} times in a row and stopped" in m for m in messages)
    assert any("the journal writer stopped" in m and "were not written" in m for m in messages)
    stored, aside = count(path, "train/loss"), int(query(path, "SELECT COUNT(*) FROM unstored")[0][0])
    assert stored == 50 and 0 < aside < 100 * (WRITER_RETRIES + 3)
    assert len(recording.instance.records) == stored
