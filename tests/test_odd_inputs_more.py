"""Odd inputs that gave raw errors or silent changes: each is refused at log() with an
error naming the kind, the identifier and what was expected, and nothing logged before or
after is lost (counted in the journal)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import fanlog


def truncated_png(tmp_path: Path) -> Any:
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(buffer, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return Image.open(path)  # opened lazily: the pixels are read at log()


def a_file(tmp_path: Path) -> str:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"w")
    return str(path)


CASES = {
    "artifact-name-with-nul": ("artifact", a_file, "ckpt\x00.bin", "no NUL character"),
    "artifact-name-surrogate": ("artifact", a_file, os.fsdecode(b"ckpt_\xff.bin"), "valid Unicode"),
    "artifact-dir-surrogate": ("artifact", a_file, os.fsdecode(b"d\xfe/x.bin"), "valid Unicode"),
    "image-truncated-file": ("image", truncated_png, "sample", "a readable image"),
    "metric-long-double-beyond-float": (
        "metric",
        lambda _: np.longdouble("1e4000"),
        "loss",
        "within float range",
    ),
    "metric-negative-long-double": (
        "metric",
        lambda _: np.array([np.longdouble("-1e4000")]),
        "loss",
        "within float range",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_at_the_call_with_a_clear_error_and_nothing_else_lost(tmp_path: Path, case: str) -> None:
    kind, make, identifier, expected = CASES[case]
    logger = fanlog.JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch")
    logger.create_logger_context(rank=0)
    for i in range(5):
        logger.log(float(i), "before", step=i)
    with pytest.raises(ValueError) as caught:
        logger.log(make(tmp_path), identifier, kind=kind)
    message = str(caught.value)
    assert f"log(kind={kind!r}, identifier={identifier!r})" in message and expected in message
    for i in range(5):
        logger.log(float(i), "after", step=i)
    assert logger.destroy_logger_context() is True
    run = fanlog.read_run(str(logger.journal_path))
    assert [r.key for r in run.records] == ["before"] * 5 + ["after"] * 5


def test_a_long_double_within_float_range_and_infinities_are_kept(tmp_path: Path) -> None:
    logger = fanlog.JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch")
    logger.create_logger_context(rank=0)
    for i, value in enumerate([np.longdouble("1.5"), np.longdouble("inf"), np.longdouble("-inf")]):
        logger.log(value, "x", step=i)
    assert logger.destroy_logger_context() is True
    assert [v for _, v in fanlog.read_run(str(logger.journal_path)).metric("x")] == [1.5, np.inf, -np.inf]


@pytest.mark.parametrize("below", ["", "sub", "sub/deeper"])
def test_a_save_dir_blocked_by_a_file_names_the_file(tmp_path: Path, below: str) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    savedir = blocker / below if below else blocker
    logger = fanlog.JournalLogger(savedir=str(savedir))
    with pytest.raises(OSError) as caught:
        logger.create_logger_context(rank=0)
    assert f"{str(blocker)!r} is a file, not a directory" in str(caught.value)
    assert str(savedir) in str(caught.value) and not logger.is_active
