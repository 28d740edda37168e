"""itwinai's lifecycle on fanlog's loggers: what every class of :mod:`fanlog.compat.itwinai` shares.

itwinai code reads and assigns ``is_initialized`` (its GPU monitor resets it in a child
process, then starts the logger again), expects ``create_logger_context()`` to return what
itwinai's returns (``None``; MLflow: the ``ActiveRun``), and gets a ``RuntimeError`` saying
"has not been initialized" from a call before the start. fanlog's own loggers differ on
each point, so the compat classes put this mixin in front of them.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from fanlog.diagnostics import implied, warn_once
from fanlog.errors import LoggerNotStartedError
from fanlog.kinds import get_kind
from fanlog.logger import _KindGate
from fanlog.record import RunStatus

BASE_EXP_NAME = "unnamed-experiment"
"""itwinai's default experiment (MLflow) and project (W&B) name (itwinai >= 0.3.4)."""

ITWINAI_CLOSE_TIMEOUT = 120.0
"""Seconds ``destroy_logger_context`` waits for delivery (fanlog's default is 30).

itwinai logs synchronously, so its users expect the tracker to hold everything once
``destroy_logger_context()`` returns; a tracker that is down still does not block longer.
"""


def itwinai_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """itwinai's defaults for fanlog options: a kind no tracker of a logger stores is kept in
    the journal (itwinai dropped it silently), and a patient close."""
    options.setdefault("unsupported", "journal")
    options.setdefault("close_timeout", ITWINAI_CLOSE_TIMEOUT)
    return options


ITWINAI_KINDS: dict[str, tuple[str, ...]] = {
    "ConsoleLogger": ("torch", "artifact", "metric"),
    "MLFlowLogger": (
        "metric",
        "figure",
        "image",
        "artifact",
        "torch",
        "dict",
        "param",
        "text",
        "model",
        "dataset",
    ),
    "WandBLogger": ("watch", "metric", "figure", "image", "torch", "dict", "param", "text"),
    "TensorBoardLogger": ("metric", "image", "text", "figure", "torch"),
    "Prov4MLLogger": (
        "metric",
        "flops_pb",
        "flops_pe",
        "system",
        "carbon",
        "execution_time",
        "model",
        "best_model",
        "torch",
    ),
}
"""``supported_kinds`` of each itwinai logger, as itwinai declares them. They are
information, not a gate: a kind the tracker stores reaches it (itwinai's TensorBoard and
Prov4ML loggers store hyperparameters, which their lists leave out)."""


def _skip(item: Any, identifier: str) -> Any:
    return item


class ItwinaiSurface:
    """``is_initialized``, ``create_logger_context`` → ``None``, ``destroy_logger_context``
    that raises before the start, itwinai's "twice" warning, and kinds itwinai ignores.

    ``is_initialized`` follows the run (True from the start to the end, on every rank) unless
    code assigns it; assigning False to a started logger makes the next
    ``create_logger_context()`` end that run and start afresh, as itwinai's GPU monitor expects.
    """

    itwinai_name: str = ""
    """The itwinai class this one stands for (its key in :data:`ITWINAI_KINDS`)."""
    _initialized: bool | None = None
    """None: follow the run; a bool: what code assigned."""

    @property
    def supported_kinds(self) -> frozenset[str]:
        """itwinai's list for a tracker logger (see :data:`ITWINAI_KINDS`); fanlog's otherwise."""
        if self.itwinai_name in ITWINAI_KINDS:
            return frozenset(ITWINAI_KINDS[self.itwinai_name])
        return super().supported_kinds  # type: ignore[misc]

    @property
    def is_initialized(self) -> bool:
        if self._initialized is not None:
            return self._initialized
        return bool(self.is_active)  # type: ignore[attr-defined]

    @is_initialized.setter
    def is_initialized(self, value: bool) -> None:
        self._initialized = bool(value)

    @property
    def experiment_id(self) -> str | None:
        """itwinai's ``experiment_id`` (only its MLflow logger has one)."""
        return None

    def create_logger_context(self, rank: int | None = None, **options: Any) -> Any:
        """Start the run; itwinai's keyword options (``run_id``, ``parent_run_id``,
        ``run_name``) reach the trackers that take them. Returns what itwinai returns: ``None``
        (MLflow: the ``mlflow.ActiveRun``)."""
        if self.is_initialized:
            warnings.warn(
                f"Trying to initialize {type(self).__name__} twice.. Skipping initialization.",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        if self.is_active:  # type: ignore[attr-defined]  # is_initialized was set to False
            super().destroy_logger_context()  # type: ignore[misc]
        super().create_logger_context(rank=rank, **options)  # type: ignore[misc]
        for logger in (self, *self.members()):  # type: ignore[attr-defined]
            if isinstance(logger, ItwinaiSurface):
                logger._initialized = None
        return self._context_value()

    def _context_value(self) -> Any:
        return None

    def destroy_logger_context(self, status: RunStatus | str = RunStatus.FINISHED) -> bool:
        """End the run (itwinai's RuntimeError if it was not started); True if every record
        reached every tracker."""
        if not self.is_initialized:
            raise self._not_started("destroy_logger_context")
        for logger in (self, *self.members()):  # type: ignore[attr-defined]
            if isinstance(logger, ItwinaiSurface):
                logger._initialized = None
        return bool(super().destroy_logger_context(status))  # type: ignore[misc]

    def log(
        self,
        item: Any,
        identifier: str,
        kind: str = "metric",
        step: int | None = None,
        batch_idx: int | None = None,
        **kwargs: Any,
    ) -> None:
        """fanlog's ``log``, with itwinai's meaning of an artifact's identifier: the folder
        that receives the file or directory (MLflow: ``<identifier>/<file name>``)."""
        if (
            kind == "artifact"
            and "artifact_path" not in kwargs
            and isinstance(identifier, str)
            and isinstance(item, (str, os.PathLike))
        ):
            kwargs["artifact_path"] = identifier
            kwargs.setdefault("artifact_file", os.path.basename(os.fspath(item).rstrip("/")))
        super().log(item, identifier, kind, step, batch_idx, **kwargs)  # type: ignore[misc]

    def _not_started(self, call: str) -> LoggerNotStartedError:
        fanlog_words = super()._not_started(call)  # type: ignore[misc]
        return LoggerNotStartedError(
            f"{type(self).__name__} has not been initialized. Use either the ``start_logging`` "
            f"context or the ``create_logger_context`` method. ({fanlog_words})"
        )

    def _gate(self, kind: str) -> _KindGate:
        """A kind fanlog does not know (itwinai's use cases log ``model_version``, which no
        itwinai logger handles) is skipped with one warning per run, not refused."""
        try:
            get_kind(kind)
        except ValueError:
            run = self._live_run("log")  # type: ignore[attr-defined]
            message = (
                f"{type(self).__name__}: {kind!r} is not a kind fanlog knows (itwinai's "
                "loggers ignore it too); those records are skipped"
            )
            warn_once(message, UserWarning, key=("unknown kind", kind), seen=run.warned, stacklevel=3)
            skipped = _KindGate(None, 0, [], _skip)
            self._gates[kind] = skipped  # type: ignore[attr-defined]
            return skipped
        gate: _KindGate = super()._gate(kind)  # type: ignore[misc]
        self._warn_journal_only(kind)
        return gate

    def _warn_journal_only(self, kind: str) -> None:
        """Once per run and kind: which members' trackers do not store `kind` (their records
        of it are in the journal only). Quiet for a kind an integration logged (a Lightning
        checkpoint), as fanlog's own loggers are."""
        run = self._live_run("log")  # type: ignore[attr-defined]
        names = [
            type(m).__name__
            for m in self.members()  # type: ignore[attr-defined]
            if run.bits.get(m) and kind not in m.backend_class.supported_kinds
        ]
        if not names or implied():
            return
        message = (
            f"{', '.join(names)}: the tracker does not store kind {kind!r}; those records "
            "are kept in fanlog's journal only (fanlog.read_run reads them, `fanlog sync` "
            "can deliver them later)"
        )
        warn_once(message, UserWarning, key=("journal only", kind), seen=run.warned, stacklevel=5)

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()  # type: ignore[misc]
        state["_initialized"] = None
        return state
