"""Redaction of secret-looking keys in params, dicts and config before they leave the process."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***REDACTED***"
_SECRET = re.compile(
    r"token|password|passwd|secret|api[_-]?key|apikey|credential|private[_-]?key", re.IGNORECASE
)
_allowed: set[str] = set()


def allow_keys(keys: Iterable[str]) -> None:
    """Let these exact keys through unredacted (process-wide)."""
    _allowed.update(keys)


def is_secret_key(key: str) -> bool:
    """True if the last path component of `key` looks like it holds a secret."""
    if key in _allowed:
        return False
    leaf = key.rsplit("/", 1)[-1].rsplit(".", 1)[-1]
    return leaf not in _allowed and bool(_SECRET.search(leaf))


def redact(value: Any) -> Any:
    """Copy `value` with every secret-looking mapping key's value replaced, at any depth."""
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if is_secret_key(str(k)) else redact(v)) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
