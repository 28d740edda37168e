"""The built-in kinds: metric, param, text, dict, figure, image, artifact, model, torch, histogram."""

from __future__ import annotations

import io
import json
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from fanlog.errors import bad_item, describe
from fanlog.kinds.registry import Kind, register_kind
from fanlog.secrets import REDACTED, CircularReferenceError, is_secret_key, redact, scrub_text
from fanlog.tensors import Deferred, TensorDataError, is_tensor, snapshot_tensor, tensor_shape, torch_module
from fanlog.validate import refuse_special


def normalize_metric(item: Any, identifier: str) -> float | Deferred:
    """A real number. bool becomes 0.0/1.0; NaN and ±inf are kept as they are."""
    cls = type(item)
    if cls is float:
        return item
    try:
        if cls is int or cls is bool:
            return float(item)
        if is_tensor(item):
            if item.numel() != 1:
                raise bad_item("metric", identifier, "a scalar (one-element tensor)", item, ValueError)
            if item.is_complex():
                raise bad_item("metric", identifier, "a real number", item)
            return snapshot_tensor(item, scalar=True)
        if isinstance(item, (np.ndarray, np.generic)):
            if item.size != 1:
                raise bad_item("metric", identifier, "a scalar (one-element array)", item, ValueError)
            if np.iscomplexobj(item) or item.dtype.kind not in "biuf":
                raise bad_item("metric", identifier, "a real number", item)
            scalar = item.reshape(-1)[0]
            value = float(scalar)
            if math.isinf(value) and np.isfinite(scalar):  # a long double beyond float64
                raise OverflowError
            return value
        if isinstance(item, numbers.Real):
            return float(item)
    except OverflowError:
        raise bad_item(
            "metric", identifier, "a real number within float range (about ±1.8e308)", item, ValueError
        ) from None
    except TensorDataError as exc:
        raise tensor_error("metric", identifier, item, exc) from None
    raise bad_item("metric", identifier, "a real number (int, float, numpy or tensor scalar)", item)


def tensor_error(kind: str, identifier: str, item: Any, exc: TensorDataError) -> ValueError:
    return ValueError(
        f"log(kind={kind!r}, identifier={identifier!r}): expected a tensor whose values can be "
        f"copied (dense, sparse or quantized), got {describe(item)}: {exc}"
    )


def snapshot_json(kind: str, identifier: str, item: Any, expected: str) -> Any:
    """A deep, redacted JSON snapshot of `item`; unknown objects become their str().

    A structure that contains itself, or that JSON cannot hold (an int of more than 4300
    digits, nesting deeper than Python's recursion limit), is refused with a clear error.
    """
    try:
        return json.loads(json.dumps(redact(item), default=_json_default, allow_nan=True))
    except CircularReferenceError as exc:
        raise _bad_structure(
            kind, identifier, item, f"{expected} without circular references", str(exc)
        ) from None
    except RecursionError:
        raise _bad_structure(
            kind, identifier, item, f"{expected} of reasonable depth", "it is nested too deeply"
        ) from None
    except ValueError as exc:  # a cycle when redaction is off; an int too long for text
        raise _bad_structure(kind, identifier, item, f"{expected} that JSON can hold", str(exc)) from None


def _bad_structure(kind: str, identifier: str, item: Any, expected: str, why: str) -> ValueError:
    return ValueError(
        f"log(kind={kind!r}, identifier={identifier!r}): expected {expected}, got "
        f"{type(item).__qualname__} ({why})"
    )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) or is_tensor(obj):
        return redact(obj.tolist())
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if isinstance(obj, complex):
        return str(obj)
    return scrub_text(str(obj))


INT64 = (-(2**63), 2**63 - 1)
"""Param ints outside this range are kept as their decimal text: trackers store int64 or float."""


def normalize_param(item: Any, identifier: str) -> Any:
    """A JSON primitive. Numpy scalars are unwrapped; other objects become JSON text or str().

    Secrets are redacted by key and by value (see :mod:`fanlog.secrets`); None and bools
    (``use_auth_token=False``) are no secret whatever their key.
    """
    if is_secret_key(identifier) and not (item is None or isinstance(item, (bool, np.bool_))):
        return REDACTED
    if isinstance(item, np.generic):
        item = item.item()  # a Python scalar (complex, bytes and str included)
    if isinstance(item, str):
        return scrub_text(str.__str__(item))
    if isinstance(item, (int, float, bool, type(None))):
        if type(item) is int and not INT64[0] <= item <= INT64[1]:
            try:
                return str(item)  # JSON readers (and trackers) would lose digits
            except ValueError:  # more digits than Python converts to text
                raise bad_item(
                    "param", identifier, "an int of at most 4300 digits", item, ValueError
                ) from None
        return item
    if isinstance(item, (Mapping, list, tuple)):
        return json.dumps(snapshot_json("param", identifier, item, "a JSON-like structure"))
    return scrub_text(str(item))


def normalize_text(item: Any, identifier: str) -> str:
    if isinstance(item, (bytes, bytearray)):
        try:
            item = bytes(item).decode("utf-8")
        except UnicodeDecodeError:
            raise bad_item("text", identifier, "UTF-8 text", item, ValueError) from None
    if not isinstance(item, str):
        raise bad_item("text", identifier, "a str", item)
    if is_secret_key(identifier):
        return REDACTED
    return scrub_text(str.__str__(item))


def normalize_dict(item: Any, identifier: str) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise bad_item("dict", identifier, "a mapping (dict)", item)
    if is_secret_key(identifier):
        return {str(k): REDACTED for k in item}
    return snapshot_json("dict", identifier, item, "a mapping")


def normalize_figure(item: Any, identifier: str) -> bytes:
    """Render a matplotlib figure to PNG now: the figure may change or close after the call."""
    if not hasattr(item, "savefig") or not hasattr(item, "canvas"):
        raise bad_item("figure", identifier, "a matplotlib Figure", item)
    buffer = io.BytesIO()
    item.savefig(buffer, format="png")
    return buffer.getvalue()


_PIL_MODES_AS_ARRAY = frozenset({"1", "L", "LA", "RGB", "RGBA", "F", "I", "I;16", "I;16L", "I;16B", "I;16N"})
"""PIL modes whose pixels numpy reads as they are; others are converted to RGB(A) first."""


def normalize_image(item: Any, identifier: str) -> np.ndarray | Deferred:
    """Validate the shape and dtype now and snapshot the pixels; layout and encoding happen later."""
    if hasattr(item, "getbands") and hasattr(item, "convert"):  # PIL.Image
        if item.mode not in _PIL_MODES_AS_ARRAY:
            alpha = "A" in item.getbands() or "transparency" in item.info
            item = item.convert("RGBA" if alpha else "RGB")
        try:
            return np.array(item)  # a copy: 16-bit and float modes keep their values
        except OSError as exc:  # a lazily opened file that is truncated or damaged
            raise bad_item("image", identifier, f"a readable image ({exc})", item, ValueError) from None
    if is_tensor(item):
        if item.is_nested or item.is_complex():
            raise bad_item("image", identifier, "a real-valued, regular tensor", item, TypeError)
        _check_image_shape(tensor_shape(item), identifier, item)
        try:
            return snapshot_tensor(_channels_last(item))
        except TensorDataError as exc:
            raise tensor_error("image", identifier, item, exc) from None
    if isinstance(item, np.ndarray):
        if item.dtype.kind not in "biuf":
            raise bad_item("image", identifier, "an array of bool, integer or float pixels", item)
        _check_image_shape(item.shape, identifier, item)
        return item.copy()
    raise bad_item("image", identifier, "a PIL image, numpy array or tensor", item)


def _channels_last(tensor: Any) -> Any:
    """A tensor image in HWC (NHWC) order. torch's convention is channels first, so a shape
    that reads both ways (3x3x3, 1x3x3, 3xHx4) is taken as CHW (NCHW); one whose first (for
    a batch: second) dimension cannot be channels is already channels last. A numpy array is
    left as it is: its convention is HWC (see to_hwc_uint8)."""
    shape = tuple(tensor.shape)
    try:
        if len(shape) == 3 and _channels_ok(shape[0]):
            return tensor.permute(1, 2, 0)
        if len(shape) == 4 and _channels_ok(shape[1]):
            return tensor.permute(0, 2, 3, 1)
    except (RuntimeError, TypeError):  # a layout that cannot be viewed (sparse): as it is
        pass
    return tensor


def _channels_ok(n: int) -> bool:
    return n in (1, 3, 4)


def _check_image_shape(shape: tuple[int, ...], identifier: str, item: Any) -> None:
    expected = "an image of shape HW, HWC, CHW, NCHW or NHWC with 1, 3 or 4 channels"
    ok = (
        len(shape) == 2
        or (len(shape) == 3 and (_channels_ok(shape[-1]) or _channels_ok(shape[0])))
        or (len(shape) == 4 and (_channels_ok(shape[-1]) or _channels_ok(shape[1])))
    )
    if not ok or min(shape, default=0) == 0:
        raise bad_item("image", identifier, expected, item, ValueError)


def to_hwc_uint8(array: np.ndarray) -> np.ndarray:
    """Any accepted image layout as an HWC uint8 array; a batch becomes a grid."""
    array = pixels_uint8(array)  # before the grid: its empty cells must not count for the range
    if array.ndim == 4:
        batch = array if _channels_ok(array.shape[-1]) else array.transpose(0, 2, 3, 1)
        array = _grid(batch)
    elif array.ndim == 3 and not _channels_ok(array.shape[-1]):
        array = array.transpose(1, 2, 0)
    elif array.ndim == 3 and _channels_ok(array.shape[0]) and array.shape[-1] > 4:
        array = array.transpose(1, 2, 0)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array)


def pixels_uint8(array: np.ndarray) -> np.ndarray:
    """Pixel values as uint8, by the rules of docs/bad-inputs.md ("Images").

    uint8 as is; bool as 0/255. Other integers within [0, 255] as they are; beyond, uint16
    scaled by 255/65535 and other integer types min-max. Floats within [0, 1] times 255,
    within [-1, 1] as (x + 1) / 2, else min-max. The range is taken over the whole item
    (every image of a batch) and over finite values only; NaN and -inf become 0, +inf 255.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    data = array.astype(np.float64)
    finite = np.isfinite(data)
    values = data[finite] if not finite.all() else data
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    floats = array.dtype.kind == "f"
    if floats and low >= 0.0 and high <= 1.0:
        scaled = data * 255.0
    elif floats and low >= -1.0 and high <= 1.0:
        scaled = (data + 1.0) * 127.5
    elif not floats and low >= 0 and high <= 255:
        scaled = data
    elif array.dtype.kind == "u" and array.dtype.itemsize == 2:  # 16-bit, any byte order
        scaled = data * (255.0 / 65535.0)
    elif high > low:
        scaled = (data - low) * (255.0 / (high - low))
    else:  # one value outside the ranges above: as it is, clipped
        scaled = data
    scaled[np.isnan(data) | (data == -np.inf)] = 0.0
    scaled[data == np.inf] = 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _grid(batch: np.ndarray) -> np.ndarray:
    """Tile an NHWC batch into one HWC image, as close to square as possible."""
    count, height, width, channels = batch.shape
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = np.zeros((rows * height, cols * width, channels), dtype=batch.dtype)
    for index in range(count):
        r, c = divmod(index, cols)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = batch[index]
    return grid


def encode_png(array: np.ndarray) -> bytes:
    from PIL import Image

    hwc = to_hwc_uint8(array)
    image = Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def normalize_histogram(item: Any, identifier: str) -> np.ndarray | Deferred:
    if is_tensor(item):
        if item.is_complex():
            raise bad_item("histogram", identifier, "real values", item)
        if item.numel() == 0:
            raise bad_item("histogram", identifier, "a non-empty array", item, ValueError)
        try:
            return snapshot_tensor(item)
        except TensorDataError as exc:
            raise tensor_error("histogram", identifier, item, exc) from None
    if isinstance(item, np.ndarray) and item.dtype.kind == "c":
        raise bad_item("histogram", identifier, "real values", item)
    try:
        array = np.array(item, dtype=np.float64, copy=True)
    except OverflowError:
        raise bad_item(
            "histogram", identifier, "values within float range (about ±1.8e308)", item, ValueError
        ) from None
    except (TypeError, ValueError):
        raise bad_item("histogram", identifier, "a numeric array or tensor", item) from None
    if array.size == 0:
        raise bad_item("histogram", identifier, "a non-empty array", item, ValueError)
    return array


def flatten_values(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float64).reshape(-1)


def check_relative_path(kind: str, identifier: str) -> str:
    """Refuse identifiers that would write outside the run directory, or that no file
    system takes as a name (a NUL; a lone surrogate, as os.listdir gives for a name that is
    not UTF-8)."""
    try:
        identifier.encode("utf-8")
        unusable = "\x00" in identifier
    except UnicodeEncodeError:
        unusable = True
    if unusable:
        raise ValueError(
            f"log(kind={kind!r}, identifier={identifier!r}): expected a file name in the run: "
            "no NUL character and valid Unicode (decode a name read from a non-UTF-8 file "
            "system with errors='replace')"
        )
    path = PurePosixPath(identifier.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(
            f"log(kind={kind!r}, identifier={identifier!r}): expected a relative path inside "
            "the run; absolute paths and '..' are refused"
        )
    return identifier


def normalize_artifact(item: Any, identifier: str) -> str:
    """An existing regular file or directory, as an absolute path. The logger then captures it
    into the run at the call (fanlog.journal.capture); a FIFO, socket or device is refused."""
    if not isinstance(item, (str, os.PathLike)):
        raise bad_item("artifact", identifier, "a path to a file or directory", item)
    check_relative_path("artifact", identifier)
    path = os.path.abspath(os.fspath(item))
    if not os.path.exists(path):
        raise ValueError(
            f"log(kind='artifact', identifier={identifier!r}): expected an existing file or "
            f"directory, but {path!r} does not exist"
        )
    refuse_special(path, identifier)
    return path


def _torch_save(item: Any) -> bytes:
    torch = torch_module()
    assert torch is not None
    buffer = io.BytesIO()
    torch.save(item, buffer)
    return buffer.getvalue()


def normalize_model(item: Any, identifier: str) -> bytes:
    """A torch.nn.Module, serialised now (a snapshot of its weights at call time)."""
    torch = torch_module()
    if torch is None or not isinstance(item, torch.nn.Module):
        raise bad_item("model", identifier, "a torch.nn.Module", item)
    try:
        return _torch_save(item)
    except Exception:  # a module defined in a function cannot be pickled: keep its weights
        return _torch_save({"state_dict": item.state_dict(), "class": type(item).__qualname__})


def normalize_torch(item: Any, identifier: str) -> bytes:
    if torch_module() is None:
        raise bad_item("torch", identifier, "an object torch.save can write", item)
    try:
        return _torch_save(item)
    except Exception as exc:
        raise TypeError(
            f"log(kind='torch', identifier={identifier!r}): expected an object torch.save "
            f"can write; it failed with {exc!r}"
        ) from None


def _image_finalize(value: Any) -> bytes:
    return encode_png(np.asarray(value))


def _histogram_finalize(value: Any) -> np.ndarray:
    return flatten_values(value)


for _kind in (
    Kind("metric", normalize_metric, "num", doc="a real scalar"),
    Kind("param", normalize_param, "json", doc="a hyperparameter (JSON primitive)"),
    Kind("text", normalize_text, "json", doc="a text document"),
    Kind("dict", normalize_dict, "json", doc="a JSON/YAML document"),
    Kind("figure", normalize_figure, "png", doc="a matplotlib figure"),
    Kind("image", normalize_image, "png", finalize=_image_finalize, doc="an image"),
    Kind("artifact", normalize_artifact, "file", doc="a file or directory"),
    Kind("model", normalize_model, "bytes", doc="a torch.nn.Module"),
    Kind("torch", normalize_torch, "bytes", doc="any object torch.save can write"),
    Kind("histogram", normalize_histogram, "npy", finalize=_histogram_finalize, doc="values"),
):
    register_kind(_kind)
