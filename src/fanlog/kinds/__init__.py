"""The kinds registry: name → normalizer, and how the journal stores the result.

A normalizer runs on the caller's thread. It validates the item, raising a
``TypeError``/``ValueError`` that names the kind, the identifier and what was
expected, and takes a cheap snapshot so that later changes by the caller cannot
alter what is logged. It never does I/O. Heavier conversion (PNG encoding) happens in
``finalize`` on the writer thread; artifacts are captured by the logger (fanlog.journal.capture).

Storage forms (what backends receive as ``Record.value``):

=========  ==============================================
storage    value handed to backends
=========  ==============================================
num        ``float``
json       the JSON value (str, number, bool, None, dict, list)
png        PNG ``bytes``
npy        ``numpy.ndarray``
file       absolute path (``str``) of the copy in the run directory
bytes      raw ``bytes`` (``torch.save`` output for model and torch)
=========  ==============================================
"""

from __future__ import annotations

from fanlog.kinds import core as _core  # noqa: F401  (registers the built-in kinds)
from fanlog.kinds import extra as _extra  # noqa: F401  (tag, dataset, system, ...)
from fanlog.kinds.registry import STORAGES, Kind, Normalizer, get_kind, known_kinds, register_kind

__all__ = ["STORAGES", "Kind", "Normalizer", "get_kind", "known_kinds", "register_kind"]
