"""The run as one object (fanlog.run.Run): members share it, destroy takes its grace period as
an argument, the pipeline starts apart from its construction, create_logger_context() accepts
options it does not know, the run id is agreed on only when it was generated, and background
threads never warn. Records are counted in the journal and in the backends.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import fanlog
from core_backends import RecordingBackend, RecordingLogger
from fanlog import JournalLogger, LoggersCollection
from fanlog.diagnostics import warn_once
from fanlog.errors import LoggerNotStartedError
from fanlog.journal import open_writer
from fanlog.kinds import get_kind
from fanlog.pipeline import Pipeline, PipelineSettings
from fanlog.rank import run_id_for_job
from fanlog.record import RunInfo, RunStatus
from support.journals import count, journals_of, meta

TESTS = str(Path(__file__).parent)


# ---------------------------------------------------------------------- one run, shared
def test_members_of_a_collection_share_one_run(tmp_path: Path) -> None:
    first, second = RecordingLogger(savedir=tmp_path), RecordingLogger(savedir=tmp_path)
    elsewhere = RecordingLogger(savedir=tmp_path, log_on_workers=3)  # no tracker on rank 0
    collection = LoggersCollection([first, second, elsewhere], job_id="shared")
    collection.create_logger_context(rank=0)
    run = collection._run
    assert run is not None
    assert all(member._run is run for member in collection.members())
    assert first._bit and second._bit and first._bit != second._bit and elsewhere._bit == 0
    assert first.run_info is second.run_info is collection.run_info
    assert first.journal_path == collection.journal_path

    first.log(1.0, "loss")  # a member and its collection count the key's steps together
    collection.log(2.0, "loss")
    second.log(3.0, "loss")
    collection.end_epoch()  # one epoch for all of them
    assert (first.epoch, second.epoch, collection.epoch) == (1, 1, 1)
    collection.log(4.0, "loss")
    assert collection.destroy_logger_context()

    records = fanlog.read_run(tmp_path).metrics
    assert [(m.step, m.epoch, m.value) for m in records] == [
        (0, 0, 1.0),
        (1, 0, 2.0),
        (2, 0, 3.0),
        (3, 1, 4.0),
    ]
    assert [r.value for r in first.instance.records] == [1.0, 2.0, 4.0]
    assert [r.value for r in second.instance.records] == [2.0, 3.0, 4.0]
    assert elsewhere.instance.records == []


def test_destroy_through_a_member_ends_the_whole_run(tmp_path: Path) -> None:
    member, other = RecordingLogger(savedir=tmp_path), RecordingLogger(savedir=tmp_path)
    collection = LoggersCollection([member, other], job_id="ended")
    collection.create_logger_context(rank=0)
    collection.log(1.0, "loss")
    assert member.destroy_logger_context()
    assert not collection.is_active and not other.is_active
    for logger, kind in ((collection, "metric"), (other, "metric"), (collection, "text")):
        with pytest.raises(LoggerNotStartedError, match="after destroy_logger_context"):
            logger.log(2.0 if kind == "metric" else "x", "loss", kind=kind)
    assert collection.destroy_logger_context()  # a second close is a no-op
    assert member.instance.status is other.instance.status is RunStatus.FINISHED
    assert count(str(collection.journal_path), "loss") == 1
    assert collection.run_info is not None and collection.run_info.run_id == "ended"  # still readable


# ---------------------------------------------------------------------- destroy(status, timeout)
def test_destroy_with_a_timeout_bounds_the_close_and_leaves_the_settings_alone(tmp_path: Path) -> None:
    """A tracker that never takes anything, a close_timeout of an hour: destroy(timeout=0.5)
    still ends, as killed, with every record in the journal and the settings unchanged."""
    dead = RecordingLogger(savedir=tmp_path, backend=RecordingBackend(always_fail=True))
    logger = LoggersCollection(
        [JournalLogger(savedir=tmp_path, log_freq="batch"), dead],
        job_id="bounded",
        close_timeout=3600,
        down_after=3600,
    )
    logger.create_logger_context(rank=0)
    for step in range(100):
        logger.log(float(step), "loss", step=step)
    run = logger._run
    assert run is not None
    outcome: list[bool] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        closer = threading.Thread(target=lambda: outcome.append(run.destroy(RunStatus.KILLED, 0.5)))
        closer.start()
        closer.join(120)  # an hour without the timeout; the point is that it ends
    assert not closer.is_alive() and outcome == [False]
    assert logger.settings.close_timeout == 3600
    assert not logger.is_active and run.status is RunStatus.KILLED
    journal = str(logger.journal_path)
    assert meta(journal)["status"] == "killed"
    assert count(journal, "loss") == 100
    assert dead.instance.records == []
    summary = [str(w.message) for w in caught if "ended with problems" in str(w.message)]
    assert summary and "records 1..100 not delivered" in summary[0]


SIGTERM_CHILD = textwrap.dedent(
    """
    import atexit, json, os, signal, sys
    sys.path.insert(0, sys.argv[2])

    def report():  # registered before fanlog's closer, so it runs after it (atexit is LIFO)
        print(json.dumps({"close_timeout": logger.settings.close_timeout,
                          "active": logger.is_active}), flush=True)

    atexit.register(report)
    from core_backends import RecordingBackend, RecordingLogger
    from fanlog import JournalLogger, LoggersCollection

    def previous_handler(signum, frame):  # the user's handler runs first; its exit closes the runs
        sys.exit(0)

    signal.signal(signal.SIGTERM, previous_handler)
    dead = RecordingLogger(savedir=sys.argv[1], backend=RecordingBackend(always_fail=True))
    logger = LoggersCollection([JournalLogger(savedir=sys.argv[1], log_freq="batch"), dead],
                               job_id="term", close_timeout=3600, down_after=3600)
    logger.create_logger_context(rank=0)
    for step in range(300):
        logger.log(float(step), "loss", step=step)
    print("ready", flush=True)
    signal.pause()
    """
)


@pytest.mark.slow
def test_sigterm_passes_its_grace_and_never_changes_the_settings(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_CHILD, str(tmp_path / "sd"), TESTS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, "FANLOG_SIGTERM_GRACE": "1"},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready", child.stderr.read() if child.stderr else ""
    child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1]) == {"close_timeout": 3600, "active": False}
    (journal,) = journals_of(tmp_path / "sd" / "runs" / "term" / "rank-0")
    assert meta(journal)["status"] == "killed"
    assert count(journal, "loss") == 300


# ---------------------------------------------------------------------- Pipeline.start()
def test_the_pipeline_starts_apart_from_its_construction(tmp_path: Path) -> None:
    backend = RecordingBackend()
    journal = open_writer(str(tmp_path / "rank-0"))
    info = RunInfo("started", "started", 0, 1, journal.run_dir)
    pipeline = Pipeline(info, journal, [("probe-unstarted", backend)], PipelineSettings())
    metric = get_kind("metric")
    for step in range(50):
        pipeline.submit((metric, "loss", float(step), step, None, 0, 0.0, 1, None))
    names = {thread.name for thread in threading.enumerate()}
    assert "fanlog-probe-unstarted" not in names and backend.opened is None  # nothing runs yet
    pipeline.start()
    assert pipeline.flush(timeout=60)
    assert [r.step for r in backend.records] == list(range(50))
    assert pipeline.close(RunStatus.FINISHED, timeout=30)
    assert backend.status is RunStatus.FINISHED
    assert count(journal.path, "loss") == 50


# ---------------------------------------------------------------------- unknown options
class OptionsBackend(RecordingBackend):
    """Honours run_id= (as an MLflow backend may), and keeps every option it was offered."""

    def __init__(self) -> None:
        super().__init__()
        self.offered: dict[str, Any] = {}

    def context_options(self, **options: Any) -> Sequence[str]:
        self.offered = options
        return ["run_id"]


ITWINAI_OPTIONS = {"parent_run_id": None, "run_name": "trainer", "run_id": "run-7"}


@pytest.mark.parametrize(
    ("options", "ignored"),
    [
        (ITWINAI_OPTIONS, ["parent_run_id", "run_name"]),  # what itwinai's trainer passes
        ({"run_id": "only-this"}, []),
        ({"nobody_knows": 1, "neither": [2]}, ["neither", "nobody_knows"]),
        ({}, []),
    ],
)
def test_create_logger_context_accepts_options_it_does_not_know(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, options: dict[str, Any], ignored: list[str]
) -> None:
    honouring = RecordingLogger(savedir=tmp_path, backend=OptionsBackend())
    off_rank = RecordingLogger(savedir=tmp_path, backend=OptionsBackend(), log_on_workers=1)
    collection = LoggersCollection([JournalLogger(savedir=tmp_path), honouring, off_rank], job_id="opts")
    with caplog.at_level("DEBUG", logger="fanlog.logger"):
        collection.create_logger_context(rank=0, **options)
    collection.log(1.0, "loss")
    assert collection.destroy_logger_context()
    assert honouring.instance.offered == options
    assert off_rank.instance.offered == {}  # no tracker on this rank: nothing offered
    debug = [r.getMessage() for r in caplog.records if "create_logger_context" in r.getMessage()]
    assert debug == (
        [f"LoggersCollection.create_logger_context(): no backend on rank 0 takes the option(s) {ignored}"]
        if ignored
        else []
    )
    assert count(str(collection.journal_path), "loss") == 1
    assert len(honouring.instance.records) == 1


def test_every_logger_kind_accepts_unknown_options(tmp_path: Path) -> None:
    for logger in (JournalLogger(savedir=tmp_path), fanlog.EmptyLogger(savedir=tmp_path)):
        assert logger.create_logger_context(rank=0, **ITWINAI_OPTIONS) is logger
        logger.log(1.0, "loss")
        assert logger.destroy_logger_context()
    assert len(fanlog.read_run(tmp_path).metrics) == 1


# ---------------------------------------------------------------------- the run id
LAUNCHER_IDS = ("FANLOG_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID", "TORCHELASTIC_RUN_ID")


@pytest.mark.parametrize(
    ("job_id", "env", "expected"),
    [
        ("given", {}, "given"),
        ("given", {"FANLOG_RUN_ID": "from-env", "SLURM_JOB_ID": "9"}, "given"),
        (None, {"FANLOG_RUN_ID": "from-env", "SLURM_JOB_ID": "9"}, "from-env"),
        (None, {"SLURM_JOB_ID": "9", "SLURM_STEP_ID": "2"}, "slurm-9.2"),
        (None, {"TORCHELASTIC_RUN_ID": "abc"}, "torchrun-abc"),
        (None, {"TORCHELASTIC_RUN_ID": "none"}, None),  # torchrun without a rendezvous id
        (None, {}, None),
    ],
)
def test_the_run_id_is_given_named_by_the_launcher_or_generated(
    monkeypatch: pytest.MonkeyPatch, job_id: str | None, env: dict[str, str], expected: str | None
) -> None:
    for name in LAUNCHER_IDS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = run_id_for_job(job_id)
    if expected is None:
        assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", found), found
        assert run_id_for_job(job_id) != found  # generated: each call makes a new one
    else:
        assert found == expected


# ---------------------------------------------------------------------- diagnostics
class GatedBackend(RecordingBackend):
    """Opens only when the test says so, then fails its first writes."""

    def __init__(self, fail_times: int) -> None:
        super().__init__(fail_times=fail_times)
        self.gate = threading.Event()

    def open(self, run: RunInfo) -> None:
        self.gate.wait(60)
        super().open(run)


def test_background_threads_hand_their_warnings_to_the_caller(tmp_path: Path) -> None:
    """Under ``-W error`` a warning raised on a dispatcher thread would end that thread and its
    deliveries; the warning comes on the caller's thread instead, and nothing is lost."""
    backend = GatedBackend(fail_times=2)
    logger = RecordingLogger(savedir=tmp_path, backend=backend, name="gated", retry_initial=0.01)
    logger.create_logger_context(rank=0)
    for step in range(10):
        logger.log(float(step), "loss", step=step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend.gate.set()  # the failing writes happen now, while warnings are errors
        with pytest.raises(RuntimeWarning, match="backend 'gated' failed"):
            logger.flush(timeout=60)
        assert logger.flush(timeout=60)  # told once
        logger.log(10.0, "loss", step=10)
        assert logger.flush(timeout=60)
    with pytest.warns(RuntimeWarning, match="ended with problems"):
        assert logger.destroy_logger_context()
    assert [r.step for r in backend.records] == list(range(11))
    assert len(logger.delivery_errors()["gated"]) == 2


def test_warn_once_per_process_or_per_given_scope() -> None:
    message = f"fanlog test: once per process {id(object())}"
    seen: set[Any] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_once(message) and not warn_once(message)
        assert warn_once("per scope", UserWarning, key="k", seen=seen)
        assert not warn_once("per scope, said otherwise", key="k", seen=seen)
        assert warn_once("per scope", UserWarning, key="k", seen=set())  # another scope
    assert [(type(w.message), str(w.message)) for w in caught] == [
        (RuntimeWarning, message),
        (UserWarning, "per scope"),
        (UserWarning, "per scope"),
    ]
    assert all(w.filename == __file__ for w in caught)  # attributed to the caller's line
