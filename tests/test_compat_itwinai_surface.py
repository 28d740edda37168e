"""itwinai's lifecycle and per-logger behaviours on the compat classes (issue 13), each with
several inputs: the console's non-numeric "metrics", TensorBoard hyperparameters read with
TensorBoard's own reader, the lifecycle errors and warnings, ``is_initialized``."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator as ea

import fanlog
from fanlog.compat.itwinai import (
    ConsoleLogger,
    EmptyLogger,
    LoggersCollection,
    Prov4MLLogger,
    TensorBoardLogger,
    WandBLogger,
)
from fanlog.errors import LoggerNotStartedError
from test_tensorboard_backend import hparams_of


@pytest.mark.parametrize(
    ("item", "printed"),
    [
        ("hello", "txt = hello"),
        ({"a": 1}, "txt = {'a': 1}"),
        (torch.tensor([1.0, 2.0]), "txt = tensor([1., 2.])"),
        ([1, 2], "txt = [1, 2]"),
        (None, "txt = None"),
    ],
)
def test_console_prints_what_is_not_a_number_as_itwinai(tmp_path: Path, item: Any, printed: str) -> None:
    stream = io.StringIO()
    logger = ConsoleLogger(savedir=str(tmp_path), log_freq="batch", stream=stream)
    with logger.start_logging():
        logger.log(item, "txt", step=0)
        logger.log(np.float32(0.5), "n", step=0)  # a number is still a metric
    assert f"ConsoleLogger: {printed}" in stream.getvalue()
    run = fanlog.read_run(logger.journal_path)
    (text,) = run.of_kind("text")
    assert text.key == "txt" and text.value == printed.removeprefix("txt = ")
    assert run.metric("n") == [(0, 0.5)]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"lr": 0.1, "name": "x"}, {"lr": ("number", 0.1), "name": ("string", "x")}),
        ({"flag": True, "layers": 3}, {"flag": ("bool", True), "layers": ("number", 3)}),
        ({"betas": (0.9, 0.99)}, {"betas": ("string", "[0.9, 0.99]")}),
        ({"c": np.complex128(1 + 2j)}, {"c": ("string", "(1+2j)")}),
    ],
)
def test_tensorboard_save_hyperparameters_writes_hparams(
    tmp_path: Path, params: dict[str, Any], expected: dict[str, tuple[str, Any]]
) -> None:
    logger = TensorBoardLogger(savedir=str(tmp_path))
    with logger.start_logging():
        logger.save_hyperparameters(params)
    (logdir,) = {p.parent for p in tmp_path.rglob("events.out.tfevents.*")}
    acc = ea.EventAccumulator(str(logdir))
    acc.Reload()
    start, _ = hparams_of(acc)
    assert set(start.hparams) == set(expected)
    for key, (field, value) in expected.items():
        stored = getattr(start.hparams[key], f"{field}_value")
        assert stored == (pytest.approx(value) if field == "number" else value)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: ConsoleLogger(savedir=str(p), stream=io.StringIO()),
        lambda p: TensorBoardLogger(savedir=str(p)),
        lambda p: WandBLogger(savedir=str(p), offline_mode=True),
        lambda p: Prov4MLLogger(provenance_save_dir=str(p / "prov"), savedir=str(p)),
        lambda p: LoggersCollection([ConsoleLogger(savedir=str(p), stream=io.StringIO())]),
    ],
    ids=["console", "tensorboard", "wandb", "prov", "collection"],
)
def test_calls_before_the_start_raise_itwinais_error(tmp_path: Path, make: Any) -> None:
    logger = make(tmp_path)
    assert logger.is_initialized is False
    for call in (
        logger.destroy_logger_context,
        lambda: logger.log(1.0, "x"),
        lambda: logger.save_hyperparameters({"a": 1}),
    ):
        with pytest.raises(LoggerNotStartedError, match="has not been initialized. Use either the"):
            call()


def test_twice_warns_and_is_initialized_can_be_reset(tmp_path: Path) -> None:
    logger = ConsoleLogger(savedir=str(tmp_path), log_freq="batch", stream=io.StringIO())
    assert logger.create_logger_context(rank=0, parent_run_id="", run_name="w") is None
    with pytest.warns(RuntimeWarning, match="Trying to initialize ConsoleLogger twice"):
        assert logger.create_logger_context(rank=0) is None
    logger.log(1.0, "loss", step=0)
    first = logger.journal_path
    logger.is_initialized = False  # itwinai's GPU monitor does this, then starts again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logger.create_logger_context(rank=0)
    assert logger.is_initialized
    logger.log(2.0, "loss", step=1)
    logger.destroy_logger_context()
    assert not logger.is_initialized
    runs = [fanlog.read_run(first), fanlog.read_run(logger.journal_path)]
    assert sorted(p for r in runs for p in r.metric("loss")) == [(0, 1.0), (1, 2.0)]


def test_empty_logger_accepts_everything_and_is_never_initialized() -> None:
    logger = EmptyLogger()
    logger.destroy_logger_context()
    assert logger.create_logger_context(rank=0, parent_run_id="x", run_name="y") is None
    logger.log(None, None, kind="system")
    assert logger.is_initialized is False
