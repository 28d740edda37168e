"""The contract every tracker implements: open a run, write batches of records, close.

A backend never sees the gate, the queue or the journal. It runs on its own
background thread, receives records read back from the journal (so live delivery
and ``fanlog sync`` are the same code path), and may raise: the dispatcher retries
with backoff and never drops what the backend did not accept. A record the tracker
can never take is a :class:`fanlog.errors.RecordRejected` (raised, or noted with
:meth:`Backend.reject`); :meth:`Backend.classify` tells the dispatcher which other
errors are of that sort.

Adding a tracker means adding one file under ``fanlog/backends/`` with a
:class:`Backend` subclass and a user-facing :class:`fanlog.logger.BackendLogger`
subclass, and one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from fanlog.errors import RecordRejected, Verdict, classify
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

    def context_options(self, **options: Any) -> Sequence[str]:
        """Offered the keyword options of ``create_logger_context()`` that fanlog itself does
        not use (itwinai's trainer passes ``run_id=``, ``parent_run_id=``, ``run_name=``):
        once per run, on the caller's thread, before :meth:`open`. Returns the names this
        backend honours; the core logs the others at debug level. Default: none."""
        return ()

    def classify(self, exc: BaseException) -> Verdict:
        """``"permanent"`` if `exc` means the record can never be stored here, else
        ``"transient"`` (retried with backoff). Default: :func:`fanlog.errors.classify`,
        which knows HTTP statuses and errno values but no tracker; override it for a
        tracker's own error codes."""
        return classify(exc)

    def reject(self, record: Record, reason: str) -> None:
        """Note that `record` can never be stored here, and go on with the batch: the
        dispatcher marks it in the journal once `write` returns (or raises past it)."""
        rejections = self.__dict__.setdefault("_rejections", [])
        rejections.append(RecordRejected(reason, record.seq))

    def take_rejections(self) -> list[RecordRejected]:
        """The rejections noted since the last call (the dispatcher collects them)."""
        return self.__dict__.pop("_rejections", [])

    def work_clock(self) -> float | None:
        """CPU seconds used so far by what does this backend's work outside the calling
        thread (a worker process), or None (default: nothing does). While it grows, a call
        in progress is busy, not stalled (see :class:`fanlog.delivery.CallWatch`)."""
        return None


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds a live process (and its waited-for children) used, from /proc; None where
    there is no /proc or the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def artifact_source(record: Record) -> str:
    """The file or directory an artifact record names, or :class:`RecordRejected` if it
    is gone or is not a regular file or directory (a FIFO would block the upload forever)."""
    path = str(record.value)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise RecordRejected(f"cannot read {path!r} ({exc.strerror})", record.seq) from exc
    if stat.S_ISDIR(mode):
        for folder, _, files in os.walk(path):
            for name in files:
                inner = os.path.join(folder, name)
                if not os.path.isfile(inner):
                    raise RecordRejected(f"{inner!r} is not a regular file", record.seq)
        return path
    if not stat.S_ISREG(mode):
        raise RecordRejected(f"{path!r} is not a regular file or a directory (a FIFO, socket "
                             "or device)", record.seq)  # fmt: skip
    return path


def import_tracker(module: str, extra: str) -> Any:
    """Import a tracker library, or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is not installed; install it with: pip install 'fanlog[{extra}]' "
            f"({exc})"
        ) from exc


def finite_histogram(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram`` of finite values, also when their range overflows a float64
    (e.g. -1e308 and 1e308): the bins are computed on values scaled into [-1, 1]."""
    scale = float(np.max(np.abs(values)))
    if not np.isfinite(float(values.max()) - float(values.min())):
        counts, edges = np.histogram(values / scale, bins=bins)
        return counts, edges * scale
    return np.histogram(values, bins=bins)


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
