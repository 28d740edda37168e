"""Images whose shape reads both ways follow the convention of their type: a torch tensor
is channels first (CHW, NCHW), a numpy array channels last (HWC, NHWC). The pixels are
read back from the PNG the journal stored (what every tracker receives)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import fanlog

torch = pytest.importorskip("torch")


def stored_pixels(tmp_path: Path, item: Any) -> np.ndarray:
    logger = fanlog.JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch")
    logger.create_logger_context(rank=0)
    logger.log(item, "img", kind="image", step=0)
    assert logger.destroy_logger_context() is True
    (record,) = fanlog.read_run(str(logger.journal_path)).records
    return np.asarray(Image.open(io.BytesIO(record.value)))


def planes(shape: tuple[int, ...], channel_axis: int, channel: int) -> np.ndarray:
    """uint8 zeros with one channel set to 255."""
    array = np.zeros(shape, dtype=np.uint8)
    index: list[Any] = [slice(None)] * len(shape)
    index[channel_axis] = channel
    array[tuple(index)] = 255
    return array


@pytest.mark.parametrize("shape", [(3, 3, 3), (3, 5, 4), (4, 4, 4), (3, 7, 1)])
def test_an_ambiguous_torch_tensor_is_chw(tmp_path: Path, shape: tuple[int, ...]) -> None:
    channels, height, width = shape
    tensor = torch.from_numpy(planes(shape, 0, 0))  # channel 0 (red) full, the others empty
    pixels = stored_pixels(tmp_path, tensor)
    assert pixels.shape[:2] == (height, width)
    assert (pixels[..., 0] == 255).all() and (pixels[..., 1:3] == 0).all()


@pytest.mark.parametrize("shape", [(3, 3, 3), (5, 3, 4), (4, 4, 4)])
def test_an_ambiguous_numpy_array_is_hwc(tmp_path: Path, shape: tuple[int, ...]) -> None:
    height, width, channels = shape
    pixels = stored_pixels(tmp_path, planes(shape, 2, 0))
    assert pixels.shape[:2] == (height, width)
    assert (pixels[..., 0] == 255).all() and (pixels[..., 1:3] == 0).all()


def test_a_gray_torch_tensor_1xhxw_is_one_channel(tmp_path: Path) -> None:
    pixels = stored_pixels(tmp_path, torch.full((1, 3, 3), 200, dtype=torch.uint8))
    assert pixels.shape[:2] == (3, 3) and (pixels == 200).all()


def test_a_torch_hwc_tensor_that_cannot_be_chw_stays_hwc(tmp_path: Path) -> None:
    tensor = torch.from_numpy(planes((6, 5, 3), 2, 1))  # green, HWC (6 cannot be channels)
    pixels = stored_pixels(tmp_path, tensor)
    assert pixels.shape == (6, 5, 3) and (pixels[..., 1] == 255).all() and (pixels[..., 0] == 0).all()


def test_an_ambiguous_torch_batch_is_nchw(tmp_path: Path) -> None:
    batch = torch.from_numpy(planes((4, 3, 4, 4), 1, 2))  # 4 blue 4x4 images, NCHW
    pixels = stored_pixels(tmp_path, batch)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    lit = pixels[..., 2] == 255
    assert lit.sum() == 4 * 4 * 4 and (pixels[lit][:, :2] == 0).all()  # every pixel of 4 images
