"""W&B sets `_step`, `_runtime` and `_timestamp` in every history row, and fanlog sets
`fanlog/step`: a user's metric under one of those names would be overwritten silently.
It is logged as `user/<key>` instead, with a warning. Read back from W&B's offline files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import fanlog
from support.wandb_log import offline_history

RESERVED = ["_step", "_runtime", "_timestamp", "fanlog/step"]


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
    rows = offline_history(savedir)
    for n, key in enumerate(RESERVED):
        values = [r[f"user/{key}"] for r in rows if f"user/{key}" in r]
        assert values == [100.0 * (n + 1) + step + 0.5 for step in range(3)], (key, rows)
    assert [r["loss"] for r in rows if "loss" in r] == [0.0, 1.0, 2.0]
    assert [r["fanlog/step"] for r in rows if "loss" in r] == [0, 1, 2]  # fanlog's own step
    said = caplog.text
    assert all(f"logged as 'user/{key}'" in said for key in RESERVED), said
