"""A record's value in the journal's columns: ``num`` (a float) or ``payload`` (text or bytes).

How a kind is stored is its *storage form* (see :mod:`fanlog.kinds`). The writer records
each kind's form in the journal (the ``kinds`` table), so any reader decodes any journal,
whatever kinds the reading process has registered.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from typing import TYPE_CHECKING, Any

import numpy as np

from fanlog.journal.capture import Captured, CaptureFailed, place
from fanlog.journal.layout import FILES_DIR, make_private_dirs
from fanlog.tensors import Deferred

if TYPE_CHECKING:
    from fanlog.kinds import Kind


def encode_value(
    kind: Kind, value: Any, run_dir: str, seq: int, key: str, files: str = FILES_DIR
) -> tuple[Any, Any]:
    """(num, payload) columns for one value of `kind`. Runs on the writer thread.

    `files` is the journal's files area (relative to `run_dir`), where artifacts go.
    """
    if isinstance(value, Deferred):
        value = value.resolve()
    if kind.finalize is not None:
        value = kind.finalize(value)
    storage = kind.storage
    if storage == "num":
        number = float(value)
        if number != number:  # SQLite stores NaN as NULL: keep it as text instead
            return None, "nan"
        return number, None
    if storage == "json":
        return None, json.dumps(value, allow_nan=True)
    if storage in ("png", "bytes"):
        return None, bytes(value)
    if storage == "npy":
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value), allow_pickle=False)
        return None, buffer.getvalue()
    if storage == "file":
        if isinstance(value, Captured):
            return None, place(value, run_dir, files, seq)
        if isinstance(value, CaptureFailed):
            raise OSError(f"could not capture {value.source!r} into the run: {value.reason}")
        return None, _copy_into_run(value, run_dir, seq, key, files)
    raise ValueError(f"unknown storage {storage!r} of kind {kind.name!r}")


def _copy_into_run(source: str, run_dir: str, seq: int, key: str, files: str = FILES_DIR) -> str:
    """Copy an artifact given as a path (not captured at log()) below the run directory;
    return its path relative to it. A failed copy raises: the record is set aside with the
    reason, never pointed at the user's original file."""
    name = os.path.basename(key.rstrip("/")) or os.path.basename(source.rstrip("/"))
    relative = os.path.join(files, str(seq), name)
    target = os.path.join(run_dir, relative)
    try:
        make_private_dirs(os.path.dirname(target))
        if os.path.isdir(source):
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)
    except OSError as exc:
        shutil.rmtree(os.path.dirname(target), ignore_errors=True)
        raise OSError(exc.errno, f"could not copy {source!r} into the run: {exc.strerror or exc}") from exc
    return relative


def decode_value(storage: str, num: Any, payload: Any, run_dir: str) -> Any:
    """The value backends receive, from the journal columns."""
    if storage == "num":
        return float("nan") if num is None else num
    if storage == "json":
        return json.loads(payload)
    if storage in ("png", "bytes"):
        return bytes(payload)
    if storage == "npy":
        return np.load(io.BytesIO(payload), allow_pickle=False)
    if storage == "file":
        relative = payload.decode() if isinstance(payload, bytes) else payload
        return os.path.join(run_dir, relative)
    raise ValueError(f"unknown storage {storage!r}")
