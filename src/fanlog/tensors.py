"""Snapshots of tensors and arrays that never synchronise a device on the caller's thread.

torch is never imported here: a tensor can only exist if the user imported torch.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


class Deferred:
    """A value captured now and materialised later on the writer thread."""

    def resolve(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class DeviceSnapshot(Deferred):
    """An asynchronous device→pinned-host copy plus the event that marks it complete.

    The copy is queued on the current stream at call time, so a later in-place
    change of the source tensor (queued after it) cannot alter the snapshot.
    """

    __slots__ = ("_host", "_event", "scalar")

    def __init__(self, host: Any, event: Any, scalar: bool) -> None:
        self._host = host
        self._event = event
        self.scalar = scalar

    def resolve(self) -> Any:
        self._event.synchronize()
        array = self._host.numpy()
        return float(array.reshape(-1)[0]) if self.scalar else array


def torch_module() -> Any | None:
    """The torch module if the user has imported it, else None (never imports it)."""
    return sys.modules.get("torch")


def is_tensor(item: Any) -> bool:
    torch = torch_module()
    return torch is not None and isinstance(item, torch.Tensor)


def tensor_shape(item: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in item.shape)


def snapshot_tensor(tensor: Any, scalar: bool = False) -> Any:
    """Copy a tensor now: a float or ndarray for host tensors, a DeviceSnapshot otherwise."""
    torch = torch_module()
    assert torch is not None
    data = tensor.detach()
    if data.dtype in (torch.bfloat16, torch.float16):
        data = data.to(torch.float32)  # numpy has no bfloat16; the cast is queued, not synced
    elif data.dtype == torch.bool:
        data = data.to(torch.uint8)
    if data.device.type == "cpu":
        array = data.numpy()
        return float(array.reshape(-1)[0]) if scalar else array.copy()
    host = torch.empty(data.shape, dtype=data.dtype, pin_memory=torch.cuda.is_available())
    host.copy_(data, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return DeviceSnapshot(host, event, scalar)


def as_array(item: Any) -> np.ndarray | Deferred:
    """Snapshot an array-like (numpy, tensor, list) as an ndarray or a Deferred."""
    if is_tensor(item):
        return snapshot_tensor(item)
    return np.array(item, copy=True)
