"""The one value that travels from `log()` to every backend.

A record is built on the caller's thread as a plain tuple (cheap), journaled by
the writer thread, and handed to backends as a :class:`Record` read back from the
journal. Live delivery and `fanlog sync` therefore use the same path.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class RunStatus(str, enum.Enum):
    """How a run ended; backends map it to their own vocabulary."""

    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"


@dataclass(frozen=True, slots=True)
class Record:
    """One logged item, after normalization by its kind.

    ``value`` has the canonical form of its kind (see :mod:`fanlog.kinds`):
    ``float`` for metric, a JSON primitive for param, ``str`` for text and tag,
    ``dict`` for dict, PNG ``bytes`` for image and figure, a float ``numpy`` array for
    histogram, an absolute file or directory path (``str``) for artifact, and
    ``torch.save`` bytes for model and torch.
    """

    seq: int
    kind: str
    key: str
    value: Any
    step: int
    time: float
    rank: int = 0
    batch_idx: int | None = None
    epoch: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a backend needs to open its run. The same for every backend of a pipeline."""

    run_id: str
    run_name: str
    rank: int
    world_size: int
    run_dir: str
    """Per-run, per-rank directory that holds the journal; backends may write below it."""
    experiment_name: str | None = None
    resumed: bool = False
