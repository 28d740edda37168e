"""The kinds registry: name → :class:`Kind` (re-exported by :mod:`fanlog.kinds`).

Not in ``fanlog/kinds/__init__.py``: that module imports the built-in kinds
(``kinds.core``, ``kinds.extra``), and they import the registry; this way round there is
no import circle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Normalizer = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Kind:
    """A registered kind of record."""

    name: str
    normalize: Normalizer
    storage: str = "json"
    finalize: Callable[[Any], Any] | None = None
    """Writer-thread conversion applied after a Deferred snapshot resolves."""
    doc: str = ""
    default_key: str | None = None
    """The key of a record logged with ``identifier=None``, for a kind whose item says what
    it is (itwinai logs ``log(None, None, kind="system")``); None: an identifier is required."""


STORAGES = ("num", "json", "png", "npy", "file", "bytes")
_REGISTRY: dict[str, Kind] = {}


def register_kind(kind: Kind, *, replace: bool = False) -> Kind:
    """Add a kind. Backends with kinds of their own call this at import of fanlog."""
    if kind.storage not in STORAGES:
        raise ValueError(f"kind {kind.name!r}: storage must be one of {STORAGES}")
    if kind.name in _REGISTRY and not replace:
        raise ValueError(f"kind {kind.name!r} is already registered")
    _REGISTRY[kind.name] = kind
    return kind


def get_kind(name: str) -> Kind:
    """The kind called `name`, or a ValueError listing the known kinds.

    A kind a built-in tracker declares in its own module (``fanlog.backends.KINDS``) is
    registered by importing that module the first time it is asked for."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    from fanlog.backends import KINDS

    home = KINDS.get(name) if isinstance(name, str) else None
    if home is not None:
        importlib.import_module(home)
        return _REGISTRY[name]
    raise ValueError(f"unknown kind {name!r}; known kinds: {', '.join(sorted(_REGISTRY))}")


def known_kinds() -> list[str]:
    return sorted(_REGISTRY)
