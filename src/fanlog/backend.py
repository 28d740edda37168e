"""The contract every tracker implements: open a run, write batches of records, close.

A backend never sees the gate, the queue or the journal. It runs on its own
background thread, receives records read back from the journal (so live delivery
and ``fanlog sync`` are the same code path), and may raise: the dispatcher retries
with backoff and never drops what the backend did not accept.

Adding a tracker means adding one file under ``fanlog/backends/`` with a
:class:`Backend` subclass and a user-facing :class:`fanlog.logger.BackendLogger`
subclass, and one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from fanlog.record import Record, RunInfo, RunStatus


class AllKinds(frozenset):
    """A `supported_kinds` that contains every kind, including ones registered later."""

    def __contains__(self, item: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "AllKinds()"


class Backend(ABC):
    """One tracker. Subclasses set `name` and `supported_kinds` and implement the three calls."""

    name: ClassVar[str] = "backend"
    supported_kinds: ClassVar[frozenset[str]] = frozenset()
    max_batch: ClassVar[int] = 1000
    """Most records handed to one `write` call."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abstractmethod
    def open(self, run: RunInfo) -> None:
        """Start or attach to the tracker's run. Called once, on the dispatcher thread."""

    @abstractmethod
    def write(self, records: Sequence[Record]) -> None:
        """Store a batch, in order. Raise on failure (the batch is retried);
        raise :class:`fanlog.errors.PartialDelivery` if only a prefix was stored."""

    def flush(self) -> None:
        """Make what `write` accepted visible in the tracker (default: nothing to do)."""

    @abstractmethod
    def close(self, status: RunStatus) -> None:
        """End the run with `status`, unless the run belongs to someone else."""

    def describe(self) -> str:
        """Where this backend writes, for messages (e.g. a tracking URI or directory)."""
        return self.name


def import_tracker(module: str, extra: str) -> Any:
    """Import a tracker library, or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is not installed; install it with: pip install 'fanlog[{extra}]' "
            f"({exc})"
        ) from exc


# name → "module:LoggerClass", imported only when used (config files, `fanlog sync --to`).
BACKENDS: dict[str, str] = {
    "journal": "fanlog.backends.journal:JournalLogger",
    "console": "fanlog.backends.console:ConsoleLogger",
    "empty": "fanlog.logger:EmptyLogger",
    "mlflow": "fanlog.backends.mlflow:MLflowLogger",
    "tensorboard": "fanlog.backends.tensorboard:TensorBoardLogger",
    "wandb": "fanlog.backends.wandb:WandBLogger",
    "azureml": "fanlog.backends.azureml:AzureMLLogger",
    "prov": "fanlog.backends.prov:Prov4MLLogger",
}


def logger_class(name: str) -> type:
    """The Logger class registered as `name`, or a dotted path ``package.module.Class``."""
    target = BACKENDS.get(name)
    if target is None and "." in name:
        module, _, attr = name.rpartition(".")
        target = f"{module}:{attr}"
    if target is None:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(sorted(BACKENDS))}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
