"""Checks of what `log()` is given that the fast path does not settle: `step`, `batch_idx`, and
artifact paths that are not regular files or directories.

`log()` accepts a plain ``int`` in range without calling anything here. Everything else
is either converted to an ``int`` (numpy integers, 0-d integer tensors, and for ``step``
an integral float) or refused with an error that names the identifier, so that no value
can reach the journal that SQLite cannot store as an INTEGER (which once made the writer
fail on a whole batch, or stored a numpy integer as an 8-byte blob).
"""

from __future__ import annotations

import operator
import os
import stat
from typing import Any

import numpy as np

from fanlog.errors import describe
from fanlog.tensors import is_tensor

INT64_MAX = 2**63 - 1
"""The largest INTEGER SQLite stores; steps and batch indices go from 0 to this."""


def check_index(value: Any, name: str, identifier: str) -> int:
    """`value` as an int in [0, INT64_MAX], or a TypeError/ValueError naming `name` and `identifier`.

    Accepted: int (not bool), numpy integer scalars, 0-d (or one-element) integer tensors,
    and, for ``step`` only, floats with an integral value (``3.0``).
    """
    number = _as_int(value, name, identifier)
    if not 0 <= number <= INT64_MAX:
        raise ValueError(
            f"log(identifier={identifier!r}): expected {name} as an int >= 0 and <= 2**63-1 "
            f"(the journal's INTEGER range); got {number}"
        )
    return number


def _as_int(value: Any, name: str, identifier: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise _refused(value, name, identifier)
    if isinstance(value, int):  # int subclasses, e.g. IntEnum
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if name == "step" and float(value).is_integer():
            return int(value)
        raise _refused(value, name, identifier)
    if is_tensor(value):
        if (
            value.numel() != 1
            or value.is_floating_point()
            or value.is_complex()
            or str(value.dtype) == "torch.bool"
        ):
            raise _refused(value, name, identifier)
        return int(value.item())  # a device tensor syncs here: pass a Python int to avoid it
    if hasattr(value, "__index__") and not isinstance(value, (str, bytes)):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise _refused(value, name, identifier)


def _refused(value: Any, name: str, identifier: str) -> TypeError:
    floats = ", or an integral float" if name == "step" else ""
    return TypeError(
        f"log(identifier={identifier!r}): expected {name} as an int >= 0 (a Python or numpy "
        f"integer, or a one-element integer tensor{floats}); got {describe(value)}"
    )


def refuse_special(path: str, identifier: str) -> None:
    """A ValueError for a FIFO, socket or device: reading one could block or never end."""
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ValueError(
            f"log(kind='artifact', identifier={identifier!r}): expected a regular file or a "
            f"directory; {path!r} is a {_file_type(mode)}"
        )


def _file_type(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"
