"""Device tensors are logged without a host-device synchronisation on the caller's thread.

The CUDA test runs only where CUDA is available (it needs a real GPU); the CPU test below
checks the deferred-snapshot path with a stand-in event, and says so.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import fanlog
from fanlog import JournalLogger
from fanlog.tensors import DeviceSnapshot


class _CompletedEvent:
    """Stand-in for a torch.cuda.Event (no GPU here): records that the writer waited on it."""

    def __init__(self) -> None:
        self.waited = False

    def synchronize(self) -> None:
        self.waited = True


def test_device_snapshot_resolves_on_the_writer_side():
    """Uses a stand-in event (a CUDA event cannot exist without a GPU)."""
    event = _CompletedEvent()
    snapshot = DeviceSnapshot(torch.tensor([3.5]), event, scalar=True)
    assert not event.waited
    assert snapshot.resolve() == 3.5 and event.waited
    image = DeviceSnapshot(torch.zeros(3, 4, 5), _CompletedEvent(), scalar=False)
    assert image.resolve().shape == (3, 4, 5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_sync_on_caller_thread(tmp_path):
    """A small training loop logs CUDA scalars, epoch aggregates and images every step under
    set_sync_debug_mode('error'): any synchronising call on this thread raises."""
    device = torch.device("cuda")
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    inputs = torch.randn(32, 64, device=device)
    targets = torch.randn(32, 1, device=device)
    logger = JournalLogger(savedir=tmp_path, log_freq="batch")
    logger.create_logger_context()
    expected = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        running = torch.zeros((), device=device)
        for step in range(20):
            loss = torch.nn.functional.mse_loss(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.detach()
            logger.log(loss, "train/loss", step=step, batch_idx=step)
            logger.log(running, "train/running", step=step, batch_idx=step)
            logger.log(loss.detach(), "train/epoch_loss", step=step, batch_idx=step, on_epoch=True)
            logger.log(torch.rand(3, 8, 8, device=device), "sample", kind="image", step=step, batch_idx=step)
            logger.log(model[0].weight.detach(), "w", kind="histogram", step=step, batch_idx=step)
            expected.append(running.clone())
        logger.end_epoch()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    logger.destroy_logger_context()
    run = fanlog.read_run(tmp_path)
    running_logged = [v for _, v in run.metric("train/running")]
    assert np.allclose(running_logged, [float(t) for t in expected], rtol=1e-5)
    assert len(run.metric("train/loss")) == 20
    images = run.of_kind("image")
    assert len(images) == 20 and Image.open(io.BytesIO(images[0].value)).size == (8, 8)
    assert len(run.of_kind("histogram")) == 20
    assert run.metric("train/epoch_loss")  # the epoch aggregate arrived once per epoch


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_in_place_change_after_log_does_not_alter_value(tmp_path):
    logger = JournalLogger(savedir=tmp_path, log_freq="batch")
    with logger.start_logging():
        value = torch.ones((), device="cuda")
        logger.log(value, "v")
        value += 99  # queued after the snapshot copy on the same stream
        logger.log(value, "v")
    assert [v for _, v in fanlog.read_run(tmp_path).metric("v")] == [1.0, 100.0]
