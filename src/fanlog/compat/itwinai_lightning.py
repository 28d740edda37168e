"""``itwinai.torch.loggers.ItwinaiLogger`` on fanlog: itwinai's Lightning adapter, built on
:class:`fanlog.lightning.FanlogLogger`.

    from itwinai.torch.loggers import ItwinaiLogger     # before
    from fanlog.compat.itwinai import ItwinaiLogger     # after

As in itwinai, the adapter logs on global rank 0 only (other ranks get Lightning's dummy
experiment), starts the wrapped logger with ``rank=0``, ends it in ``finalize`` unless
``skip_finalize``, and logs each checkpoint as the artifact ``<stem>/<file>`` with a
``metadata.yaml`` and an ``aliases.txt`` beside it. ``name`` and ``version`` return the
experiment name and fanlog's run id where itwinai's return ``None`` (which made Lightning
save checkpoints under ``None/version_None``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from fanlog.lightning import FanlogLogger, run_status
from fanlog.logger import Logger

CHECKPOINT_SETTINGS = (
    "monitor",
    "mode",
    "save_last",
    "save_top_k",
    "save_weights_only",
    "_every_n_train_steps",
)
"""The ModelCheckpoint settings itwinai writes into a checkpoint's ``metadata.yaml``."""


class ItwinaiLogger(FanlogLogger):
    """itwinai's Lightning adapter with the same arguments: ``itwinai_logger`` (any
    :mod:`fanlog.compat.itwinai` or fanlog logger), ``log_model`` (``False``, ``True``,
    ``"all"``) and ``skip_finalize`` (leave the logger open after the fit)."""

    def __init__(
        self,
        itwinai_logger: Logger,
        log_model: Literal["all"] | bool = False,
        skip_finalize: bool = False,
    ) -> None:
        super().__init__(itwinai_logger, log_model=log_model, rank=0)
        self.itwinai_logger = itwinai_logger
        self._skip_finalize = skip_finalize

    @property
    @rank_zero_experiment
    def experiment(self) -> Logger:
        """The wrapped logger, started with ``rank=0`` if it was not (rank 0 only)."""
        return super().experiment

    @property
    def save_dir(self) -> str | None:
        return self._logger.savedir if rank_zero_only.rank == 0 else None  # type: ignore[attr-defined]

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        super().log_hyperparams(params)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """``"all"``, or ``True`` with ``save_top_k=-1``: log now; ``True``: at the end."""
        self._checkpoint_callback = checkpoint_callback
        keep_all = getattr(checkpoint_callback, "save_top_k", None) == -1
        if self._log_model == "all" or (self._log_model is True and keep_all):
            self._log_checkpoints(checkpoint_callback)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Log the checkpoints still to log and end the wrapped logger's run (even one the
        user started, as itwinai does), unless ``skip_finalize``."""
        logger = self._logger
        initialized = getattr(logger, "is_initialized", None)
        if not (logger.is_active if initialized is None else initialized) or self._skip_finalize:
            return
        if self._log_model is True and self._checkpoint_callback is not None:
            self._log_checkpoints(self._checkpoint_callback)
        logger.destroy_logger_context(run_status(status))
        self._owns_run = False

    def _log_checkpoint(self, logger: Logger, callback: Any, path: str, score: Any) -> None:
        """``<stem>/<file>``, then ``<stem>/metadata.yaml`` and ``<stem>/aliases.txt``."""
        stem = Path(path).stem
        metadata = {
            "score": score.item() if hasattr(score, "item") else score,
            "original_filename": Path(path).name,
            type(callback).__name__: {
                key: getattr(callback, key) for key in CHECKPOINT_SETTINGS if hasattr(callback, key)
            },
        }
        aliases = ["latest", "best"] if path == getattr(callback, "best_model_path", None) else ["latest"]
        logger.log(path, stem, kind="artifact", artifact_path=stem, artifact_file=Path(path).name)
        folder = tempfile.mkdtemp(prefix="itwinai-checkpoint-")
        try:  # the journal captures the files at the call: the folder can go right after
            files = {
                "metadata.yaml": yaml.safe_dump(metadata, default_flow_style=False),
                "aliases.txt": str(aliases),
            }
            for name, text in files.items():
                local = os.path.join(folder, name)
                with open(local, "w", encoding="utf-8") as handle:
                    handle.write(text)
                logger.log(local, stem, kind="artifact", artifact_path=stem, artifact_file=name)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
