"""Snapshots of tensors and arrays that never synchronise a device on the caller's thread.

torch is never imported here: a tensor can only exist if the user imported torch.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


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


class DeferredMapping(Deferred):
    """A mapping of numbers with device snapshots among its values, all resolved on the writer."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def resolve(self) -> dict[str, Any]:
        return {k: v.resolve() if isinstance(v, Deferred) else v for k, v in self._values.items()}


def numbers_mapping(values: Mapping[str, float | Deferred]) -> dict[str, float] | Deferred:
    """`values` as plain floats, or, when some are device snapshots, one Deferred for them all:
    a JSON kind (``system``, ``carbon``) can then hold device tensors without a sync."""
    floats = {k: v for k, v in values.items() if not isinstance(v, Deferred)}
    return floats if len(floats) == len(values) else DeferredMapping(values)


def torch_module() -> Any | None:
    """The torch module if the user has imported it, else None (never imports it)."""
    return sys.modules.get("torch")


def is_tensor(item: Any) -> bool:
    torch = torch_module()
    return torch is not None and isinstance(item, torch.Tensor)


def tensor_shape(item: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in item.shape)


class TensorDataError(ValueError):
    """A tensor whose values cannot be copied to the host (a meta or nested tensor)."""


_casts: dict[Any, Any] = {}
"""dtype -> the dtype a snapshot is taken in, for dtypes numpy has no counterpart of."""


def _fill_casts(torch: Any) -> dict[Any, Any]:
    _casts.update(
        {torch.bfloat16: torch.float32, torch.float16: torch.float32, torch.complex32: torch.complex64}
    )
    for name in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu"):
        if hasattr(torch, name):
            _casts[getattr(torch, name)] = torch.float32
    return _casts


def snapshot_tensor(tensor: Any, scalar: bool = False) -> Any:
    """Copy a tensor now: a float or ndarray for host tensors, a DeviceSnapshot otherwise.

    Dtypes numpy lacks (bfloat16, float16, float8, complex32) are copied as float32 (or
    complex64); sparse and quantized tensors as their dense values. A meta or nested tensor
    raises TensorDataError.
    """
    torch = torch_module()
    assert torch is not None
    data = tensor.detach()
    cast = (_casts or _fill_casts(torch)).get(data.dtype)
    if cast is not None:
        data = data.to(cast)  # queued on the device, not synchronised
    try:
        return _copy(torch, data, scalar)
    except (TypeError, RuntimeError, NotImplementedError) as exc:
        data = _strided(torch, data, exc)
    try:
        return _copy(torch, data, scalar)
    except (TypeError, RuntimeError, NotImplementedError) as exc:
        raise TensorDataError(f"its values cannot be copied: {exc}") from None


def _copy(torch: Any, data: Any, scalar: bool) -> Any:
    if data.device.type == "cpu":
        array = data.numpy()
        return float(array.reshape(-1)[0]) if scalar else array.copy()
    host = torch.empty(data.shape, dtype=data.dtype, pin_memory=torch.cuda.is_available())
    host.copy_(data, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return DeviceSnapshot(host, event, scalar)


def _strided(torch: Any, data: Any, exc: BaseException) -> Any:
    """The plain dense tensor behind a sparse or quantized one (a slow path: only on failure)."""
    if data.is_meta:
        raise TensorDataError("a meta tensor has no data") from None
    if data.is_nested:
        raise TensorDataError("a nested tensor has no single shape") from None
    if data.is_quantized:
        return data.dequantize()
    if data.layout is not torch.strided:
        return data.to_dense()
    raise TensorDataError(f"its values cannot be copied: {exc}") from None
