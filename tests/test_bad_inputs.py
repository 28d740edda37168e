"""Bad inputs: every row of the table in docs/bad-inputs.md is one parametrized case here.

The general rows go through a real JournalLogger and are read back from the journal;
the tracker rows go through a real `mlflow server` (read back with MlflowClient) and a
real offline W&B run (read back from its .wandb file). No mocks.
"""

from __future__ import annotations

import enum
import fractions
import glob
import io
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fanlog import read_run
from fanlog.backends.journal import JournalLogger
from fanlog.errors import LoggerNotStartedError
from fanlog.secrets import REDACTED

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"


@dataclass
class Case:
    """One row: what is logged, and either the error raised or the value stored."""

    id: str
    doc: str
    """The behaviour column of the row in docs/bad-inputs.md, verbatim."""
    item: Callable[[Path], Any]
    identifier: str = "x"
    kind: str = "metric"
    options: dict[str, Any] = field(default_factory=dict)
    error: type[Exception] | None = None
    stored: Any = None
    """The value read back from the journal (a callable for checks other than ==)."""


def value(v: Any) -> Callable[[Path], Any]:
    return lambda _tmp: v


def is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def pixels(png: bytes) -> list[Any]:
    """The pixel values of a PNG, as nested lists (what a viewer shows)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image).tolist()


@dataclass
class PngIs:
    """A check of a stored PNG: its pixels must be `expected`."""

    expected: list[Any]

    def __call__(self, png: bytes) -> bool:
        return pixels(png) == self.expected


png_is = PngIs


def circular_dict(_tmp: Path) -> dict[str, Any]:
    config: dict[str, Any] = {"optimizer": {"name": "sgd"}}
    config["optimizer"]["parent"] = config
    return config


def circular_list(_tmp: Path) -> list[Any]:
    items: list[Any] = [1, 2]
    items.append([items])
    return items


def deeply_nested(_tmp: Path) -> dict[str, Any]:
    top: dict[str, Any] = {}
    level = top
    for _ in range(5000):
        level["child"] = {}
        level = level["child"]
    return top


def pil_image(array: Any) -> Callable[[Path], Any]:
    """A PIL image made from `array` (float32: mode F, uint16: I;16, int32: I, bool: 1)."""
    from PIL import Image

    return lambda _tmp: Image.fromarray(np.asarray(array))


class Split(enum.StrEnum):
    TRAIN = "train/loss"


GENERAL = [
    Case("metric-nan", "kept as NaN", value(float("nan")), stored=is_nan),
    Case("metric-inf", "kept as inf", value(float("inf")), stored=math.inf),
    Case("metric-neg-inf", "kept as -inf", value(float("-inf")), stored=-math.inf),
    Case("metric-none", "TypeError", value(None), error=TypeError),
    Case("metric-bool", "coerced to 1.0 / 0.0", value(True), stored=1.0),
    Case("metric-numpy-scalar", "coerced to float", value(np.float32(0.25)), stored=0.25),
    Case("metric-numpy-int", "coerced to float", value(np.int64(7)), stored=7.0),
    Case(
        "metric-0d-tensor",
        "coerced to float (snapshot, no device sync)",
        value(torch.tensor(1.5)),
        stored=1.5,
    ),
    Case("metric-1-element-tensor", "coerced to float", value(torch.tensor([[2.5]])), stored=2.5),
    Case("metric-multi-element-tensor", "ValueError", value(torch.ones(3)), error=ValueError),
    Case("metric-multi-element-array", "ValueError", value(np.ones(2)), error=ValueError),
    Case("metric-string", "TypeError (a numeric string is not parsed)", value("0.5"), error=TypeError),
    Case("metric-complex", "TypeError", value(1 + 2j), error=TypeError),
    Case("metric-complex-tensor", "TypeError", value(torch.tensor(1 + 2j)), error=TypeError),
    Case(
        "metric-fraction", "coerced to float (any numbers.Real)", value(fractions.Fraction(1, 4)), stored=0.25
    ),
    Case("identifier-empty", "ValueError", value(1.0), identifier="", error=ValueError),
    Case("identifier-not-str", "ValueError", value(1.0), identifier=5, error=ValueError),  # type: ignore[arg-type]
    Case("identifier-1000-chars", "kept whole in the journal", value(1.0), identifier="k" * 1000, stored=1.0),
    Case(
        "identifier-mlflow-chars",
        "kept verbatim in the journal",
        value(1.0),
        identifier="val loss@epoch#1",
        stored=1.0,
    ),
    Case(
        "artifact-missing",
        "ValueError",
        value("/nonexistent/file.bin"),
        identifier="f.bin",
        kind="artifact",
        error=ValueError,
    ),
    Case(
        "artifact-traversal",
        "ValueError; nothing written outside the run",
        lambda tmp: str(tmp / "src.txt"),
        identifier="../../escaped.txt",
        kind="artifact",
        error=ValueError,
    ),
    Case(
        "artifact-absolute",
        "ValueError",
        lambda tmp: str(tmp / "src.txt"),
        identifier="/tmp/abs.txt",
        kind="artifact",
        error=ValueError,
    ),
    Case("artifact-not-a-path", "TypeError", value(42), identifier="f", kind="artifact", error=TypeError),
    Case(
        "text-10mb",
        "stored whole",
        value("x" * 10_000_000),
        kind="text",
        stored=lambda v: v == "x" * 10_000_000,
    ),
    Case("text-bad-utf8", "ValueError", value(b"\xff\xfe"), kind="text", error=ValueError),
    Case("text-not-str", "TypeError", value(12), kind="text", error=TypeError),
    Case(
        "param-not-json", "coerced to its str()", value(Path("/data/set")), kind="param", stored="/data/set"
    ),
    Case("param-list", "coerced to JSON text", value([1, 2]), kind="param", stored="[1, 2]"),
    Case(
        "param-secret-key",
        "redacted",
        value("hunter2"),
        identifier="db/password",
        kind="param",
        stored=REDACTED,
    ),
    Case("step-negative", "ValueError", value(1.0), options={"step": -1}, error=ValueError),
    Case("step-integral-float", "coerced to int", value(1.0), options={"step": 3.0}, stored=1.0),
    Case("step-fractional-float", "TypeError", value(1.0), options={"step": 2.5}, error=TypeError),
    Case("step-bool", "TypeError", value(1.0), options={"step": True}, error=TypeError),
    Case("step-numeric-string", "TypeError", value(1.0), options={"step": "3"}, error=TypeError),
    Case("step-too-large", "ValueError", value(1.0), options={"step": 2**63}, error=ValueError),
    Case("step-huge-float", "ValueError", value(1.0), options={"step": 1e20}, error=ValueError),
    Case(
        "step-numpy-uint64-max",
        "ValueError",
        value(1.0),
        options={"step": np.uint64(2**64 - 1)},
        error=ValueError,
    ),
    Case("step-float-tensor", "TypeError", value(1.0), options={"step": torch.tensor(3.0)}, error=TypeError),
    Case(
        "batch-idx-numpy-int",
        "coerced to int",
        value(1.0),
        options={"batch_idx": np.arange(5)[3]},
        stored=1.0,
    ),
    Case(
        "batch-idx-0d-tensor",
        "coerced to int",
        value(1.0),
        options={"batch_idx": torch.tensor(3)},
        stored=1.0,
    ),
    Case("batch-idx-too-large", "ValueError", value(1.0), options={"batch_idx": 2**63}, error=ValueError),
    Case("batch-idx-string", "TypeError", value(1.0), options={"batch_idx": "3"}, error=TypeError),
    Case("batch-idx-float", "TypeError", value(1.0), options={"batch_idx": 2.5}, error=TypeError),
    Case(
        "kind-unknown", "ValueError listing the known kinds", value(1.0), kind="nosuchkind", error=ValueError
    ),
    Case("figure-not-a-figure", "TypeError", value([1, 2]), kind="figure", error=TypeError),
    Case("image-wrong-shape", "ValueError", value(np.zeros((7, 10, 10))), kind="image", error=ValueError),
    Case("image-1d", "ValueError", value(np.zeros(10)), kind="image", error=ValueError),
    Case("image-not-an-array", "TypeError", value("cat.png"), kind="image", error=TypeError),
    Case("histogram-empty", "ValueError", value([]), kind="histogram", error=ValueError),
    Case("dict-not-a-mapping", "TypeError", value([1]), kind="dict", error=TypeError),
    Case("model-not-a-module", "TypeError", value(3), kind="model", error=TypeError),
    # numbers and tensors that have no plain float form
    Case("metric-int-beyond-float", "ValueError", value(10**400), error=ValueError),
    Case(
        "metric-fraction-beyond-float", "ValueError", value(fractions.Fraction(10**400, 3)), error=ValueError
    ),
    Case("metric-numpy-complex", "TypeError", value(np.complex128(1 + 1j)), error=TypeError),
    Case(
        "metric-float8-tensor",
        "coerced to float (copied as float32;",
        value(torch.tensor(1.5).to(torch.float8_e4m3fn)),
        stored=1.5,
    ),
    Case(
        "metric-float8-e5m2-tensor",
        "coerced to float (copied as float32)",
        value(torch.tensor([0.25]).to(torch.float8_e5m2)),
        stored=0.25,
    ),
    Case(
        "metric-sparse-tensor",
        "coerced to float (its dense value;",
        value(torch.tensor([[2.5]]).to_sparse()),
        stored=2.5,
    ),
    Case(
        "metric-meta-tensor",
        "ValueError (a meta tensor has no data;",
        value(torch.tensor(1.0, device="meta")),
        error=ValueError,
    ),
    Case(
        "histogram-sparse-tensor",
        "coerced to its dense values",
        value(torch.eye(3).to_sparse()),
        kind="histogram",
        stored=lambda v: sorted(v.tolist()) == [0.0] * 6 + [1.0] * 3,
    ),
    Case(
        "histogram-float8-tensor",
        "coerced to float32 values",
        value(torch.tensor([0.5, 2.0]).to(torch.float8_e4m3fn)),
        kind="histogram",
        stored=lambda v: v.tolist() == [0.5, 2.0],
    ),
    Case(
        "histogram-meta-tensor",
        "ValueError",
        value(torch.zeros(4, device="meta")),
        kind="histogram",
        error=ValueError,
    ),
    Case(
        "histogram-complex-tensor",
        "TypeError",
        value(torch.tensor([1 + 2j])),
        kind="histogram",
        error=TypeError,
    ),
    Case(
        "histogram-complex-array",
        "TypeError",
        value(np.array([1 + 2j, 3j])),
        kind="histogram",
        error=TypeError,
    ),
    Case("histogram-int-beyond-float", "ValueError", value([1, 10**400]), kind="histogram", error=ValueError),
    Case(
        "param-int-beyond-int64",
        "coerced to its decimal text",
        value(10**400),
        kind="param",
        stored="1" + "0" * 400,
    ),
    Case("param-int-too-long-for-text", "ValueError", value(10**5000), kind="param", error=ValueError),
    Case(
        "param-numpy-complex",
        "coerced to its str()",
        value(np.complex64(1 + 2j)),
        kind="param",
        stored="(1+2j)",
    ),
    Case(
        "param-circular-list",
        "ValueError naming where it contains itself",
        circular_list,
        kind="param",
        error=ValueError,
    ),
    Case(
        "dict-circular",
        "ValueError naming where it contains itself",
        circular_dict,
        kind="dict",
        error=ValueError,
    ),
    Case("dict-nested-too-deep", "ValueError", deeply_nested, kind="dict", error=ValueError),
    Case(
        "dataset-circular",
        "ValueError naming where it contains itself",
        circular_dict,
        kind="dataset",
        error=ValueError,
    ),
    # identifiers that are str subclasses
    Case(
        "identifier-strenum",
        "accepted as its plain str value",
        value(1.0),
        identifier=Split.TRAIN,
        stored=1.0,
    ),
    Case(
        "identifier-numpy-str",
        "accepted as a plain str",
        value(2.0),
        identifier=np.str_("val/acc"),
        stored=2.0,
    ),
    Case("text-numpy-str", "stored as a plain str", value(np.str_("note")), kind="text", stored="note"),
    # images: refused at log() when they are no pixels, else converted as "Images" says
    Case(
        "image-object-array",
        "TypeError",
        value(np.full((4, 4), None, dtype=object)),
        kind="image",
        error=TypeError,
    ),
    Case(
        "image-complex-array",
        "TypeError",
        value(np.zeros((4, 4), np.complex64)),
        kind="image",
        error=TypeError,
    ),
    Case(
        "image-complex-tensor",
        "TypeError",
        value(torch.zeros(3, 4, 4, dtype=torch.complex64)),
        kind="image",
        error=TypeError,
    ),
    Case(
        "image-meta-tensor",
        "ValueError",
        value(torch.zeros(3, 4, 4, device="meta")),
        kind="image",
        error=ValueError,
    ),
    Case(
        "image-float-0-1",
        "times 255",
        value(np.array([[0.0, 0.5, 1.0]])),
        kind="image",
        stored=png_is([[0, 128, 255]]),
    ),
    Case(
        "image-float-above-1",
        "min-max normalised",
        value(np.array([[0.0, 0.6, 1.2]])),
        kind="image",
        stored=png_is([[0, 128, 255]]),
    ),
    Case(
        "image-float-minus-1-1",
        "(x + 1) / 2, times 255",
        value(np.array([[-1.0, 0.0, 1.0]])),
        kind="image",
        stored=png_is([[0, 128, 255]]),
    ),
    Case(
        "image-float-wide-range",
        "min-max normalised",
        value(np.array([[-300.0, 0.0, 300.0]])),
        kind="image",
        stored=png_is([[0, 128, 255]]),
    ),
    Case(
        "image-float-nan-inf",
        "NaN and -inf black, +inf white; the range ignores them",
        value(np.array([[np.nan, 0.5, np.inf, -np.inf]], np.float32)),
        kind="image",
        stored=png_is([[0, 128, 255, 0]]),
    ),
    Case(
        "image-float16-tensor",
        "times 255 (copied as float32)",
        value(torch.tensor([[[0.0, 1.0]]], dtype=torch.float16)),
        kind="image",
        stored=png_is([[0, 255]]),
    ),
    Case(
        "image-float8-tensor",
        "times 255 (copied as float32)",
        value(torch.tensor([[0.0, 0.5]]).to(torch.float8_e4m3fn)),
        kind="image",
        stored=png_is([[0, 128]]),
    ),
    Case(
        "image-sparse-tensor",
        "its dense values",
        value(torch.eye(2).to_sparse()),
        kind="image",
        stored=png_is([[255, 0], [0, 255]]),
    ),
    Case(
        "image-uint16",
        "scaled by 255/65535",
        value(np.array([[0, 32768, 65535]], np.uint16)),
        kind="image",
        stored=png_is([[0, 128, 255]]),
    ),
    Case(
        "image-uint16-8bit-values",
        "as they are (values within [0, 255])",
        value(np.array([[0, 100, 255]], np.uint16)),
        kind="image",
        stored=png_is([[0, 100, 255]]),
    ),
    Case(
        "image-int64-tensor",
        "as they are (values within [0, 255])",
        value(torch.tensor([[7, 200]])),
        kind="image",
        stored=png_is([[7, 200]]),
    ),
    Case(
        "image-int32-wide-range",
        "min-max normalised",
        value(np.array([[-10, 0, 10]], np.int32)),
        kind="image",
        stored=png_is([[0, 128, 255]]),
    ),
    Case(
        "image-bool-array",
        "False black, True white",
        value(np.array([[True, False]])),
        kind="image",
        stored=png_is([[255, 0]]),
    ),
    Case(
        "image-bool-tensor",
        "False black, True white",
        value(torch.tensor([[False, True]])),
        kind="image",
        stored=png_is([[0, 255]]),
    ),
    Case(
        "image-pil-mode-f",
        "as a float image",
        pil_image(np.array([[0.0, 0.5, 1.0]], np.float32)),
        kind="image",
        stored=png_is([[0, 128, 255]]),
    ),
    Case(
        "image-pil-mode-i16",
        "as a 16-bit image",
        pil_image(np.array([[0, 65535]], np.uint16)),
        kind="image",
        stored=png_is([[0, 255]]),
    ),
    Case(
        "image-pil-mode-i",
        "as an integer image",
        pil_image(np.array([[0, 1000, 2000]], np.int32)),
        kind="image",
        stored=png_is([[0, 128, 255]]),
    ),
    Case(
        "image-pil-mode-1",
        "False black, True white",
        pil_image(np.array([[True, False]])),
        kind="image",
        stored=png_is([[255, 0]]),
    ),
    # secrets in values (see the Secrets section)
    Case(
        "param-url-password",
        "the password is redacted",
        value("postgres://app:pw9@db/x"),
        kind="param",
        stored=f"postgres://app:{REDACTED}@db/x",
    ),
    Case(
        "text-env-secret",
        "the value is redacted",
        value("WANDB_API_KEY=abc123 python t.py"),
        kind="text",
        stored=f"WANDB_API_KEY={REDACTED} python t.py",
    ),
    Case("tag-secret-key", "redacted", value("s3cr3t"), identifier="sas_token", kind="tag", stored=REDACTED),
    Case(
        "dataset-secret-key",
        "the value is redacted",
        value({"uri": "s3://b/d", "api_key": "k1"}),
        kind="dataset",
        stored={"uri": "s3://b/d", "api_key": REDACTED},
    ),
    Case("options-secret", "the option is redacted", value(1.0), options={"token": "t0k"}, stored=1.0),
]


@pytest.fixture
def logger(tmp_path: Path) -> Iterator[JournalLogger]:
    lg = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch")
    lg.create_logger_context(rank=0)
    (tmp_path / "src.txt").write_text("payload")
    yield lg
    lg.destroy_logger_context()


@pytest.mark.parametrize("case", GENERAL, ids=[c.id for c in GENERAL])
def test_bad_input(case: Case, logger: JournalLogger, tmp_path: Path) -> None:
    logger.log(1.0, "before", step=0)  # logged before the bad input: must survive it
    item = case.item(tmp_path)
    if case.error is not None:
        with pytest.raises(case.error) as raised:
            logger.log(item, case.identifier, kind=case.kind, **case.options)
        message = str(raised.value)  # names the identifier (or the unknown kind)
        assert repr(case.identifier) in message or "unknown kind 'nosuchkind'" in message
    else:
        logger.log(item, case.identifier, kind=case.kind, **case.options)
    logger.log(2.0, "after", step=0)  # the loop goes on
    assert logger.flush(timeout=30)
    assert logger.journal_path is not None
    data = read_run(logger.journal_path)
    assert data.metric("before") == [(0, 1.0)] and data.metric("after") == [(0, 2.0)]
    logged = [r for r in data.records if r.key == case.identifier]
    if case.error is not None:
        assert logged == []
        assert not glob.glob(str(tmp_path / "**" / "escaped.txt"), recursive=True)
        return
    assert len(logged) == 1
    assert type(logged[0].key) is str  # a str subclass is stored as a plain str
    if case.id == "options-secret":
        assert logged[0].options == {"token": REDACTED}
    stored = logged[0].value
    if callable(case.stored):
        assert case.stored(stored), stored
    else:
        assert stored == case.stored
    if "step" in case.options:
        assert logged[0].step == int(case.options["step"])
    if "batch_idx" in case.options:
        assert logged[0].batch_idx == int(case.options["batch_idx"])
        assert type(logged[0].batch_idx) is int


@pytest.mark.parametrize("kind", ["dict", "param", "dataset"])
def test_circular_structure_error_says_where(kind: str, logger: JournalLogger, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"circular references.*\['optimizer'\]\['parent'\]"):
        logger.log(circular_dict(tmp_path), "cfg", kind=kind)


def test_log_before_create_and_after_destroy(tmp_path: Path) -> None:
    lg = JournalLogger(savedir=str(tmp_path / "sd"))
    with pytest.raises(LoggerNotStartedError, match="before create_logger_context"):
        lg.log(1.0, "x")
    lg.create_logger_context(rank=0)
    lg.log(1.0, "x")
    lg.destroy_logger_context()
    with pytest.raises(LoggerNotStartedError, match="after destroy_logger_context"):
        lg.log(1.0, "x")
    assert lg.journal_path is not None
    assert read_run(lg.journal_path).metric("x") == [(0, 1.0)]  # what came before is kept


def test_param_relogged_with_another_value_keeps_both_in_the_journal(logger: JournalLogger) -> None:
    logger.log(0.1, "lr", kind="param")
    logger.log(0.2, "lr", kind="param")
    assert logger.flush(timeout=30)
    assert logger.journal_path is not None
    assert [r.value for r in read_run(logger.journal_path).of_kind("param")] == [0.1, 0.2]


# ------------------------------------------------------------------ tracker rows
@pytest.fixture(scope="module")
def mlflow_logged(mlflow_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One MLflow run that received every tracker-specific bad input; read back once."""
    from fanlog.backends.mlflow import MLflowLogger

    savedir = tmp_path_factory.mktemp("bad-mlflow")
    logger = MLflowLogger(
        savedir=str(savedir), tracking_uri=mlflow_server.url, experiment_name="bad-inputs", log_freq="batch"
    )
    logger.create_logger_context(rank=0)
    logger.log(float("nan"), "nan_metric", step=0)
    logger.log(float("inf"), "inf_metric", step=0)
    logger.log(1.0, "val loss@epoch#1", step=0)
    logger.log(2.0, "k" * 1000, step=0)
    logger.log("y" * 10_000_000, "big.txt", kind="text")
    logger.log(0.1, "lr", kind="param")
    logger.log(0.2, "lr", kind="param")  # MLflow params are immutable
    logger.log(1e308, "huge_metric", step=0)
    logger.log(-0.0, "neg_zero", step=0)
    logger.log(4.0, "a" * 249 + "/bbb", step=0)
    logger.log("x", "../escape.txt", kind="text")
    logger.log(np.zeros((1, 30000), np.uint8), "strip", kind="image")
    logger.log(3.0, "after_conflict", step=0)
    started = time.monotonic()
    while not logger.flush(timeout=5) and time.monotonic() - started < 120:
        pass
    errors = logger.delivery_errors()
    run_id = logger.mlflow_run_id
    logger.destroy_logger_context()
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    return {
        "client": client,
        "run": client.get_run(run_id),
        "errors": errors,
        "dir": savedir,
        "rejected": refused_keys(logger.journal_path),
    }


def refused_keys(journal_path: str) -> dict[str, str]:
    """Key → reason of the records the journal marks as refused for good by MLflow."""
    return {r.key: r.reason for r in read_run(journal_path).rejected if r.tracker == "mlflow"}


def metric(found: dict[str, Any], key: str) -> float:
    return found["run"].data.metrics[key]


MLFLOW = [
    Case("mlflow-nan", "stored as NaN", value(None), stored=lambda f: math.isnan(metric(f, "nan_metric"))),
    Case(
        "mlflow-inf",
        "stored by MLflow as its largest float (MLflow's own rule)",
        value(None),
        stored=lambda f: metric(f, "inf_metric") >= 1.7e308,
    ),
    Case(
        "mlflow-bad-chars",
        "invalid characters become '_' (with a warning)",
        value(None),
        stored=lambda f: metric(f, "val loss_epoch_1") == 1.0,
    ),
    Case(
        "mlflow-1000-chars",
        "truncated to MLflow's 250 characters (with a warning)",
        value(None),
        stored=lambda f: metric(f, "k" * 250) == 2.0,
    ),
    Case(
        "mlflow-10mb-text",
        "stored whole as a text artifact",
        value(None),
        stored=lambda f: (
            next(a.file_size for a in f["client"].list_artifacts(f["run"].info.run_id) if a.path == "big.txt")
            == 10_000_000
        ),
    ),
    Case(
        "mlflow-param-relogged",
        "first value kept; the conflict is a delivery error, later records still delivered",
        value(None),
        stored=lambda f: (
            f["run"].data.params["lr"] == "0.1"
            and any("ParamConflictError" in e for e in f["errors"].get("mlflow", []))
            and metric(f, "after_conflict") == 3.0
            and "ParamConflictError" in f["rejected"]["lr"]
        ),
    ),
    Case("mlflow-huge", "stored as is", value(None), stored=lambda f: metric(f, "huge_metric") == 1e308),
    Case("mlflow-negative-zero", "stored as 0.0", value(None), stored=lambda f: metric(f, "neg_zero") == 0.0),
    Case(
        "mlflow-key-cut-ends-in-slash",
        "cut to 250 characters, then normalised again",
        value(None),
        stored=lambda f: metric(f, "a" * 249) == 4.0,
    ),
    Case(
        "mlflow-path-leaves-run",
        "refused for good: marked in the journal's `rejected` table",
        value(None),
        stored=lambda f: (
            "leaves the run" in f["rejected"]["../escape.txt"] and metric(f, "after_conflict") == 3.0
        ),
    ),
    Case(
        "mlflow-image-1x30000",
        "refused for good (MLflow cannot make its thumbnail)",
        value(None),
        stored=lambda f: "height and width" in f["rejected"]["strip"] and metric(f, "after_conflict") == 3.0,
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", MLFLOW, ids=[c.id for c in MLFLOW])
def test_bad_input_in_mlflow(case: Case, mlflow_logged: dict[str, Any]) -> None:
    assert callable(case.stored) and case.stored(mlflow_logged)


IMAGES = [c for c in GENERAL if isinstance(c.stored, PngIs)]


@pytest.mark.slow
def test_image_pixels_read_back_from_tensorboard_and_mlflow(mlflow_server: Any, tmp_path: Path) -> None:
    """Each image case's pixels as TensorBoard's reader and an MLflow artifact download see them."""
    import mlflow
    from tensorboard.backend.event_processing import event_accumulator as ea

    from fanlog import LoggersCollection
    from fanlog.backends.mlflow import MLflowLogger
    from fanlog.backends.tensorboard import TensorBoardLogger

    savedir = tmp_path / "sd"
    logger = LoggersCollection(
        [
            MLflowLogger(savedir=str(savedir), tracking_uri=mlflow_server.url, experiment_name="pixels"),
            TensorBoardLogger(savedir=str(savedir)),
        ],
        savedir=str(savedir),
        run_name="pixels",
    )
    logger.create_logger_context(rank=0)
    for case in IMAGES:
        logger.log(case.item(tmp_path), f"{case.id}.png", kind="image")
    assert logger.flush(timeout=120)
    member = logger.loggers[0]
    assert isinstance(member, MLflowLogger)
    run_id = member.mlflow_run_id
    assert logger.destroy_logger_context()

    accumulator = ea.EventAccumulator(str(savedir / "tensorboard" / "pixels"), size_guidance={ea.IMAGES: 0})
    accumulator.Reload()
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    stored = {a.path for a in client.list_artifacts(run_id)}
    assert stored == {f"{case.id}.png" for case in IMAGES}  # every image arrived
    for case in IMAGES:
        assert isinstance(case.stored, PngIs)
        (event,) = accumulator.Images(f"{case.id}.png")
        assert pixels(event.encoded_image_string) == case.stored.expected, case.id
        local = client.download_artifacts(run_id, f"{case.id}.png", str(tmp_path / "dl"))
        assert pixels(Path(local).read_bytes()) == case.stored.expected, case.id


WANDB = [
    Case("wandb-non-monotonic-step", "each record kept at its own step (fanlog/step)", value(None)),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", WANDB, ids=[c.id for c in WANDB])
def test_bad_input_in_wandb(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fanlog.backends.wandb import STEP_METRIC, WandBLogger
    from support.wandb_log import read_transaction_log

    for name in ("WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("HOME", str(tmp_path))
    logger = WandBLogger(
        savedir=str(tmp_path / "sd"),
        mode="offline",
        log_freq="batch",
        settings={"x_disable_stats": True, "console": "off"},
    )
    logger.create_logger_context(rank=0)
    for step in (5, 3, 7, 0):  # validation "in the past", then a restart from 0
        logger.log(float(step), "loss", step=step)
    logger.destroy_logger_context()
    (path,) = glob.glob(str(tmp_path / "sd" / "wandb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    deadline = time.monotonic() + 60
    rows: list[tuple[int, float]] = []
    while time.monotonic() < deadline:
        try:
            records = read_transaction_log(path)
        except ValueError:
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            for r in records:
                if r.WhichOneof("record_type") == "history":
                    row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
                    if "loss" in row:
                        rows.append((row[STEP_METRIC], row["loss"]))
            break
        time.sleep(0.1)
    assert rows == [(5, 5.0), (3, 3.0), (7, 7.0), (0, 0.0)]


# ------------------------------------------------------------------ the table and the tests agree
def doc_rows() -> dict[str, str]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`([a-z0-9-]+)`\s*\|(.*)\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = match.group(3).strip()
    return rows


def test_docs_table_lists_every_case_with_its_behaviour() -> None:
    rows = doc_rows()
    cases = [*GENERAL, *MLFLOW, *WANDB]
    assert len(cases) >= 30
    assert set(rows) == {c.id for c in cases}
    for case in cases:
        assert rows[case.id].startswith(case.doc), (case.id, rows[case.id], case.doc)
    assert os.path.getsize(DOC) > 0
