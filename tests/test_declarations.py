"""Each tracker's options are declared once and every reader uses that declaration: the logger's
signature and checks, the backend built from a plain mapping, the journal's record of it, and
the Backend contract's defaults. No mocks: backends are real classes, journals real files.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import fanlog
from fanlog import backend as registry
from fanlog.backend import JOURNAL_ONLY_BIT, Backend, backend_type, logger_type
from fanlog.backends import BUILTIN
from fanlog.backends.console import ConsoleLogger
from fanlog.backends.journal import JournalLogger
from fanlog.backends.mlflow import MLflowBackend, MLflowLogger
from fanlog.backends.tensorboard import TensorBoardBackend, TensorBoardLogger
from fanlog.backends.wandb import WandBLogger
from fanlog.journal import connect
from fanlog.logger import Logger, LoggersCollection, TrackerLogger
from fanlog.logger_options import LoggerOptions
from fanlog.options import BackendContext, BackendOptions
from fanlog.pipeline import PipelineSettings
from fanlog.record import Record
from support.third_party_backend import NotesBackend, NotesLogger, read_notes

TRACKERS = sorted(BUILTIN)


# ---------------------------------------------------------------- one declaration, every reader
@pytest.mark.parametrize("name", TRACKERS)
def test_signature_and_defaults_come_from_the_declaration(name: str) -> None:
    logger_cls = logger_type(name)
    own = logger_cls.backend_class.Options
    parameters = inspect.signature(logger_cls).parameters
    assert list(parameters)[0] == "savedir"
    assert parameters["savedir"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(parameters.values())[1:])
    for option, field in own.model_fields.items():
        assert parameters[option].default == field.default, option
        assert field.description, f"{own.__name__}.{option} has no description"
    expected = set(own.model_fields) | set(LoggerOptions.model_fields)
    assert set(parameters) == expected - set(own.sets_common)
    logger = logger_cls(savedir="somewhere")
    for option, field in own.model_fields.items():
        value = getattr(logger.options, option)
        assert value == field.default or option == "provenance_save_dir", option
        if not hasattr(Logger, option) and option != "settings":  # W&B's: logger.settings is the pipeline's
            assert getattr(logger, option) is value, option
    assert logger.__init__.__doc__ and "Args:" in logger.__init__.__doc__


def test_common_options_are_loggers_own_and_pipeline_fields_are_read() -> None:
    defaults = {
        n: p.default
        for n, p in inspect.signature(Logger.__init__).parameters.items()
        if p.kind is p.POSITIONAL_OR_KEYWORD and n != "self"
    }
    pipeline = {f.name: f.default for f in dataclasses.fields(PipelineSettings)}
    declared = {n: f.default for n, f in LoggerOptions.model_fields.items()}
    assert declared == {**defaults, **pipeline}
    assert MLflowLogger().experiment_name == "fanlog"  # a tracker's own default for a common option
    assert JournalLogger().experiment_name is None


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (
            lambda: MLflowLogger(trackin_uri="x"),
            TypeError,
            "MLflowLogger: unknown option 'trackin_uri' (did you mean 'tracking_uri'?)",
        ),
        (lambda: TensorBoardLogger(flush_sec=3), TypeError, "did you mean 'flush_secs'?"),
        (
            lambda: WandBLogger(experiment_name="x"),
            TypeError,
            "unknown option 'experiment_name' (did you mean 'project_name'?)",
        ),
        (lambda: TensorBoardLogger(max_queue="ten"), TypeError, "max_queue: expected integer, got str 'ten'"),
        (lambda: MLflowLogger(tags=["a"]), TypeError, "tags: expected object or null, got list ['a']"),
        (lambda: ConsoleLogger(interval="5"), TypeError, "interval: expected number, got str '5'"),
        (lambda: JournalLogger(log_freq=["x"]), TypeError, "log_freq: expected integer or string, got list"),
        (lambda: JournalLogger(strict="yes"), TypeError, "strict: expected boolean, got str 'yes'"),
        (lambda: WandBLogger(mode="sometimes"), ValueError, "mode must be one of ('online', 'offline'"),
        (lambda: JournalLogger(unsupported="drop"), ValueError, "unsupported must be one of ('warn'"),
        (lambda: JournalLogger(flush_interval="0.1"), TypeError, "flush_interval: expected number"),
    ],
)
def test_bad_options_name_the_option_and_what_is_expected(call: Any, error: type, text: str) -> None:
    with pytest.raises(error) as caught:
        call()
    assert text in str(caught.value), str(caught.value)


def test_from_options_builds_the_same_backend_the_logger_builds(tmp_path: Path) -> None:
    logger = MLflowLogger(
        str(tmp_path),
        tracking_uri="http://127.0.0.1:1",
        run_description="d",
        experiment_name="exp",
        log_on_workers=[2, 3],
        tags={"team": "a"},
    )
    built = logger.make_backend()
    spec = built.spec()
    json.dumps(spec)
    rebuilt = backend_type(spec["type"]).from_options(
        {**spec["options"], **spec["context"]}, BackendContext()
    )
    assert rebuilt.spec() == spec
    assert (rebuilt.experiment_name, rebuilt.parent_rank, rebuilt.savedir) == ("exp", 2, str(tmp_path))
    with pytest.raises(TypeError, match="did you mean 'tracking_uri'"):
        MLflowBackend.from_options({"tracking_url": "x"})
    with pytest.raises(TypeError, match="histogram_bins: expected integer"):
        TensorBoardBackend.from_options({"histogram_bins": 1.5})


def test_spec_redacts_secrets_and_flags_what_json_cannot_hold(tmp_path: Path) -> None:
    stream = open(tmp_path / "console.txt", "w")  # noqa: SIM115 - a live object, as users pass
    try:
        spec = ConsoleLogger(stream=stream).make_backend().spec()
    finally:
        stream.close()
    assert spec["unserialisable"] == ["stream"] and "stream" not in spec["options"]
    secret = MLflowLogger(tracking_uri="https://user:S3cretPw@host/", tags={"api_token": "tok-123"})
    text = json.dumps(secret.make_backend().spec())
    assert "S3cretPw" not in text and "tok-123" not in text and "host" in text


@pytest.mark.slow
def test_the_journal_records_each_backends_declaration(tmp_path: Path) -> None:
    """What `fanlog show` reads instead of a class name: needs_delivery, declared."""
    out = tmp_path / "notes"
    collection = LoggersCollection(
        [JournalLogger(log_freq="batch"), NotesLogger(folder=str(out))], savedir=str(tmp_path)
    )
    with collection.start_logging(rank=0):
        collection.log(1.0, "loss", step=0)
    conn = connect(collection.journal_path, readonly=True)
    specs = {name: json.loads(text) for name, text in conn.execute("SELECT name, options FROM backends")}
    conn.close()
    assert specs["journal"]["needs_delivery"] is False and specs["notes"]["needs_delivery"] is True
    assert specs["notes"]["type"] == "notes" and specs["notes"]["options"]["folder"] == str(out)
    summary = subprocess.run(
        [sys.executable, "-m", "fanlog.cli", "show", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert summary.returncode == 0, summary.stderr
    assert "journal stored, notes 1/1" in summary.stdout, summary.stdout
    assert len([n for n in read_notes(out) if n.get("kind") == "metric"]) == 1


# ---------------------------------------------------------------- the Backend contract
def test_supported_kinds_are_derived_from_the_writers_table() -> None:
    assert NotesBackend.supported_kinds == frozenset({"metric", "param", "text"})
    for name in TRACKERS:
        backend = backend_type(name)
        if backend.writers:
            assert backend.supported_kinds == frozenset(backend.writers), name
            assert all(callable(getattr(backend, m)) for m in backend.writers.values()), name
    with pytest.raises(TypeError, match="names methods it does not have: \\['_missing'\\]"):
        type("Broken", (Backend,), {"writers": {"metric": "_missing"}})
    with pytest.raises(TypeError, match="supported_kinds is derived"):
        type("Both", (Backend,), {"writers": {}, "supported_kinds": frozenset({"metric"})})


def test_every_hook_has_a_working_default(tmp_path: Path) -> None:
    class Minimal(Backend):
        name = "minimal"
        writers = {"metric": "_keep"}

        def __init__(self) -> None:
            super().__init__()
            self.kept: list[float] = []

        def _keep(self, record: Record) -> None:
            if record.value < 0:
                raise ValueError("negative")
            self.kept.append(record.value)

    backend = Minimal()
    backend.prepare()
    backend.open(None)  # type: ignore[arg-type]
    records = [
        Record(seq=i, kind="metric", key="m", value=v, step=i, time=0.0)
        for i, v in enumerate([1.0, 2.0, -1.0, 3.0], start=1)
    ]
    with pytest.raises(fanlog.errors.PartialDelivery) as caught:
        backend.write(records)
    assert caught.value.done == 2 and backend.kept == [1.0, 2.0]
    backend.flush()
    backend.close(fanlog.RunStatus.FINISHED)
    assert backend.needs_delivery and backend.work_clock() is None and backend.take_rejections() == []
    assert backend.classify(caught.value) == "permanent" and backend.describe() == "minimal"


# ---------------------------------------------------------------- unsupported="journal"
@pytest.mark.parametrize("members", [1, 2])
def test_unsupported_journal_keeps_the_record_for_no_tracker(tmp_path: Path, members: int) -> None:
    out = tmp_path / "notes"
    loggers: list[Logger] = [NotesLogger(folder=str(out), log_freq=2)]
    if members == 2:
        loggers.append(NotesLogger(folder=str(out / "b"), log_freq="batch", name="second"))
    collection = LoggersCollection(loggers, savedir=str(tmp_path), unsupported="journal")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loop sees nothing
        with collection.start_logging(rank=0):
            for batch_idx in range(4):
                collection.log([1.0, float(batch_idx)], "h", kind="histogram", batch_idx=batch_idx)
                collection.log(float(batch_idx), "loss", step=batch_idx, batch_idx=batch_idx)
            complete = collection.flush(timeout=60)
    assert complete
    histograms = fanlog.read_run(collection.journal_path).of_kind("histogram")
    assert [r.batch_idx for r in histograms] == ([0, 2] if members == 1 else [0, 1, 2, 3])
    conn = connect(collection.journal_path, readonly=True)
    masks = {m for (m,) in conn.execute("SELECT mask FROM records WHERE kind = 'histogram'")}
    conn.close()
    assert masks == {JOURNAL_ONLY_BIT}
    assert len([n for n in read_notes(out) if n.get("kind") == "histogram"]) == 0
    assert len([n for n in read_notes(out) if n.get("kind") == "metric"]) == 2


# ---------------------------------------------------------------- the registry
def test_registry_names_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTERED", {})
    assert set(BUILTIN) | {"empty"} <= set(registry.known_backends())
    with pytest.raises(ValueError, match="unknown backend 'tensorbord' \\(did you mean 'tensorboard'\\?\\)"):
        logger_type("tensorbord")
    with pytest.raises(ValueError, match="'empty' \\(EmptyLogger\\) is not a tracker"):
        backend_type("empty")
    with pytest.raises(ValueError, match="already registered"):
        fanlog.register_backend("mlflow", NotesLogger)
    fanlog.register_backend("mlflow", NotesLogger, replace=True)
    assert logger_type("mlflow") is NotesLogger
    with pytest.raises(TypeError, match="not a fanlog Logger"):
        fanlog.register_backend("odd", "collections:OrderedDict")
        logger_type("odd")
    with pytest.raises(ValueError, match="non-empty str without ':'"):
        fanlog.register_backend("a:b", NotesLogger)


def test_a_tracker_option_may_not_repeat_a_common_one() -> None:
    class Clashing(BackendOptions):
        savedir: str = "x"

    class ClashingBackend(Backend):
        Options = Clashing

    with pytest.raises(TypeError, match="Clashing.savedir repeats the common option 'savedir'"):

        class ClashingLogger(TrackerLogger):  # the shell is checked when its class is made
            backend_class = ClashingBackend


@pytest.mark.slow
def test_tracker_kinds_are_registered_by_their_module_when_asked_for() -> None:
    code = (
        "import sys\nfrom fanlog.kinds import get_kind\n"
        "assert 'fanlog.backends.prov' not in sys.modules\n"
        "print(get_kind('prov_documents').name, 'fanlog.backends.prov' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["prov_documents", "True"], out.stderr
    from fanlog.kinds import get_kind

    assert get_kind("prov_documents").normalize.__module__ == "fanlog.backends.prov"


@pytest.mark.slow
def test_config_needs_neither_click_nor_a_tracker_library() -> None:
    code = (
        "import sys\nfrom fanlog.config import from_config, json_schema\n"
        "from_config({'loggers': [{'type': 'mlflow'}, {'type': 'wandb'}, {'type': 'prov'}]})\n"
        "json_schema()\n"
        "print(sorted(m for m in ('click', 'torch', 'mlflow', 'wandb', 'tensorboard', 'yprov4ml')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("context", ["train", "TRAINING", 3])
def test_prov_refuses_an_unknown_context_also_through_a_collection(context: Any) -> None:
    """Prov4MLLogger.log checks `context` at the call; a record that reaches the backend
    another way (a collection, fanlog sync) is rejected for yProv4ML alone, naming it."""
    from fanlog.backends.prov import Prov4MLBackend
    from fanlog.errors import RecordRejected

    record = Record(
        seq=7, kind="metric", key="loss", value=1.0, step=0, time=0.0, options={"context": context}
    )
    with pytest.raises(RecordRejected, match="context must be one of") as caught:
        Prov4MLBackend()._item(record, resumed=False)
    assert caught.value.seq == 7
