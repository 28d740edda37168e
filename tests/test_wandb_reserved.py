"""W&B sets `_step`, `_runtime` and `_timestamp` in every history row, and fanlog sets
`fanlog/step`: a user's metric under one of those names would be overwritten silently.
It is logged as `user/<key>` instead, with a warning. Read back from W&B's offline files."""

from __future__ import annotations

import glob
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanlog

RESERVED = ["_step", "_runtime", "_timestamp", "fanlog/step"]


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    yield


def history_rows(savedir: Path) -> list[dict[str, Any]]:
    from support.wandb_log import read_transaction_log

    (path,) = glob.glob(str(savedir / "wandb" / "**" / "offline-run-*" / "run-*.wandb"), recursive=True)
    deadline = time.monotonic() + 60
    records: list[Any] = []
    while time.monotonic() < deadline:
        try:
            records = read_transaction_log(path)
        except ValueError:
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        time.sleep(0.1)
    return [
        {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]


@pytest.mark.slow
def test_reserved_wandb_keys_are_renamed_not_lost(
    tmp_path: Path, wandb_offline: None, caplog: pytest.LogCaptureFixture
) -> None:
    savedir = tmp_path / "sd"
    logger = fanlog.WandBLogger(
        savedir=str(savedir),
        log_freq="batch",
        mode="offline",
        settings={"x_disable_stats": True, "console": "off"},
    )
    logger.create_logger_context(rank=0)
    with caplog.at_level(logging.WARNING, logger="fanlog"):
        for step in range(3):
            logger.log(float(step), "loss", step=step)
            for n, key in enumerate(RESERVED):
                logger.log(100.0 * (n + 1) + step + 0.5, key, step=step)
        assert logger.destroy_logger_context() is True
    rows = history_rows(savedir)
    for n, key in enumerate(RESERVED):
        values = [r[f"user/{key}"] for r in rows if f"user/{key}" in r]
        assert values == [100.0 * (n + 1) + step + 0.5 for step in range(3)], (key, rows)
    assert [r["loss"] for r in rows if "loss" in r] == [0.0, 1.0, 2.0]
    assert [r["fanlog/step"] for r in rows if "loss" in r] == [0, 1, 2]  # fanlog's own step
    said = caplog.text
    assert all(f"logged as 'user/{key}'" in said for key in RESERVED), said
