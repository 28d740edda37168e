"""Device tensors in the kinds beyond metric are stored like metrics: copied without a wait on
the caller's thread, resolved on the writer thread.

That covers tensors inside a mapping of numbers (``system``, itwinai's ``carbon``) and a
tensor where one number is expected (``flops_pb``, ``flops_pe``, ``execution_time``).
Without a GPU the device copy is replaced by a DeviceSnapshot of the host tensor with a
stand-in event (a CUDA event cannot exist here); the CUDA test below takes the real copy.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import fanlog
import fanlog.compat.itwinai  # noqa: F401 - registers the ``carbon`` kind
import fanlog.tensors
from fanlog import JournalLogger
from fanlog.tensors import DeviceSnapshot


class _CompletedEvent:
    """Stand-in for a torch.cuda.Event (no GPU here); counts the writer's waits on it."""

    waits = 0

    def synchronize(self) -> None:
        _CompletedEvent.waits += 1


@pytest.fixture
def as_if_on_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tensor is copied as a device tensor is: into a DeviceSnapshot resolved later."""

    def device_copy(torch_module: Any, data: Any, scalar: bool) -> DeviceSnapshot:
        return DeviceSnapshot(data.clone(), _CompletedEvent(), scalar)

    monkeypatch.setattr(fanlog.tensors, "_copy", device_copy)
    _CompletedEvent.waits = 0


MAPPINGS = [
    ("system", {"gpu_util": torch.tensor(0.75), "host_load": 2.0}, {"gpu_util": 0.75, "host_load": 2.0}),
    ("system", {"a": torch.tensor([1.5]), "b": torch.tensor(2)}, {"a": 1.5, "b": 2.0}),
    ("carbon", {"emissions_kg": torch.tensor(0.25)}, {"emissions_kg": 0.25}),
    ("carbon", {"energy_kwh": torch.tensor(3.0, dtype=torch.float16), "n": 1}, {"energy_kwh": 3.0, "n": 1.0}),
]
NUMBERS = [
    ("flops_pb", torch.tensor(1.0e9), 1.0e9),
    ("flops_pe", torch.tensor([4.0e11], dtype=torch.float64), 4.0e11),
    ("execution_time", torch.tensor(12.5), 12.5),
]


def _logged(tmp_path: Any, kind: str, values: list[Any]) -> list[Any]:
    logger = JournalLogger(savedir=tmp_path)
    with logger.start_logging():
        for step, value in enumerate(values):
            logger.log(value, "key", kind=kind, step=step)
    return [record.value for record in fanlog.read_run(tmp_path).of_kind(kind)]


@pytest.mark.parametrize(("kind", "item", "stored"), MAPPINGS)
def test_device_tensors_in_a_mapping_are_stored(tmp_path, as_if_on_device, kind, item, stored):
    assert _logged(tmp_path, kind, [item, item]) == [stored, stored]
    assert _CompletedEvent.waits == 2 * sum(torch.is_tensor(v) for v in item.values())


@pytest.mark.parametrize(("kind", "item", "stored"), NUMBERS)
def test_a_device_tensor_for_a_number_is_stored(tmp_path, as_if_on_device, kind, item, stored):
    assert _logged(tmp_path, kind, [item, 7]) == [stored, 7.0]
    assert _CompletedEvent.waits == 1


@pytest.mark.parametrize(("kind", "item", "stored"), MAPPINGS + NUMBERS)
def test_host_tensors_are_stored_as_before(tmp_path, kind, item, stored):
    assert _logged(tmp_path, kind, [item]) == [stored]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("kind", "item", "stored"), MAPPINGS + NUMBERS)
def test_cuda_tensors_are_stored_without_a_sync(tmp_path, kind, item, stored):
    if isinstance(item, dict):
        item = {k: v.cuda() if torch.is_tensor(v) else v for k, v in item.items()}
    else:
        item = item.cuda()
    logger = JournalLogger(savedir=tmp_path)
    with logger.start_logging():
        torch.cuda.set_sync_debug_mode("error")
        try:
            logger.log(item, "key", kind=kind, step=0)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert [r.value for r in fanlog.read_run(tmp_path).of_kind(kind)] == [stored]
