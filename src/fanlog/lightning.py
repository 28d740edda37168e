"""Lightning integration: a ``lightning.pytorch`` logger that forwards to any fanlog logger.

``Trainer(logger=FanlogLogger(my_fanlog_logger))`` sends Lightning's metrics,
hyperparameters, graph and (with ``log_model``) checkpoints through fanlog, so every
tracker fanlog is configured for receives them without the trainer waiting on any.

Lightning's own loggers only log on global rank 0 (``rank_zero_only``). This adapter
instead starts the fanlog run with the trainer's global rank and lets fanlog's
``log_on_workers`` decide, so ``log_on_workers=-1`` really logs on every rank.

The hi-ml helpers :func:`log_on_epoch` and :func:`log_learning_rate` make the
``LightningModule.log`` calls of a training step consistent across single- and
multi-device runs.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from fanlog.backend import import_tracker
from fanlog.logger import Logger as FanlogBaseLogger
from fanlog.record import RunStatus

_pl = import_tracker("lightning.pytorch", "lightning")
from lightning.pytorch.loggers.logger import Logger as _LightningLogger  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402

LOG_MODEL_CHOICES = (False, True, "all")

# Lightning's finalize() vocabulary → fanlog's run status.
_STATUS = {
    "success": RunStatus.FINISHED,
    "finished": RunStatus.FINISHED,
    "failed": RunStatus.FAILED,
    "killed": RunStatus.KILLED,
    "interrupted": RunStatus.KILLED,
}


def run_status(status: str) -> RunStatus:
    """The fanlog status for a Lightning ``finalize`` status (unknown words count as finished)."""
    return _STATUS.get(str(status).lower(), RunStatus.FINISHED)


def _plain_params(params: Mapping[str, Any] | Namespace) -> dict[str, Any]:
    """Hyperparameters as a plain mapping: Namespaces opened, callables named."""
    if isinstance(params, Namespace):
        params = vars(params)
    plain: dict[str, Any] = {}
    for key, value in dict(params).items():
        if isinstance(value, Namespace):
            value = vars(value)
        if isinstance(value, Mapping):
            value = _plain_params(value)
        elif callable(value) and not isinstance(value, type):
            value = getattr(value, "__qualname__", None) or getattr(value, "__name__", None) or repr(value)
        elif isinstance(value, type):
            value = value.__qualname__
        plain[str(key)] = value
    return plain


class FanlogLogger(_LightningLogger):
    """A Lightning logger that forwards to a fanlog ``Logger`` or ``LoggersCollection``.

    Args:
        logger: the fanlog logger. If it is not started yet, the adapter starts it on first
            use (with the trainer's global rank) and ends it in ``finalize``; a logger the
            user started is left to the user to end.
        log_model: ``False`` (default) logs no checkpoint; ``"all"`` logs every checkpoint
            as ModelCheckpoint saves it; ``True`` logs, when training ends, the best k
            checkpoints that ModelCheckpoint kept (and its ``last.ckpt``), as artifacts
            under ``checkpoints/``.
        log_graph: forward the model graph (``kind="torch"`` with
            ``(module, example_input_array)``; TensorBoard draws it).
        rank: the global rank to log as; default Lightning's (``rank_zero_only.rank``).
        prefix: prepended to every metric name (joined with ``-``, as Lightning does).
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        logger: FanlogBaseLogger,
        log_model: bool | str = False,
        log_graph: bool = False,
        rank: int | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        if not isinstance(logger, FanlogBaseLogger):
            raise TypeError(
                f"FanlogLogger expects a fanlog Logger or LoggersCollection; got {type(logger).__name__}"
            )
        if log_model not in LOG_MODEL_CHOICES:
            raise ValueError(f"log_model must be one of {LOG_MODEL_CHOICES}; got {log_model!r}")
        self._logger = logger
        self._log_model = log_model
        self._log_graph = log_graph
        self._rank = rank
        self._prefix = prefix
        self._owns_run = False
        self._run_id: str | None = None
        self._checkpoint_callback: Any = None
        self._logged_checkpoints: dict[str, float] = {}

    # ------------------------------------------------------------------ Lightning properties
    @property
    def experiment(self) -> FanlogBaseLogger:
        """The fanlog logger, started (on this rank) if it was not yet."""
        logger = self._logger
        if not logger.is_active:
            if self._run_id is not None and logger.job_id is None:
                logger.job_id = self._run_id  # started again after finalize: same run
            rank = self._rank if self._rank is not None else getattr(rank_zero_only, "rank", None)
            logger.create_logger_context(rank=rank)
            self._owns_run = True
        if logger.run_info is not None:
            self._run_id = logger.run_info.run_id
        return logger

    @property
    def name(self) -> str:
        return self._logger.experiment_name or "fanlog"

    @property
    def version(self) -> str:
        """fanlog's run id (shared by every rank); used by ModelCheckpoint for its directory.

        Known once the run was opened; asking before that opens it, asking after
        ``finalize`` does not reopen it.
        """
        if self._run_id is None:
            run_info = self.experiment.run_info
            self._run_id = run_info.run_id if run_info is not None else None
        return self._run_id or "0"

    @property
    def save_dir(self) -> str | None:
        return self._logger.savedir

    @property
    def root_dir(self) -> str | None:
        return self._logger.savedir

    @property
    def log_dir(self) -> str | None:
        """The run's directory for this rank (the journal's); opens the run if it is not yet."""
        run_info = self._logger.run_info or self.experiment.run_info
        return run_info.run_dir if run_info is not None else None

    # ------------------------------------------------------------------ forwarding
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Forward metrics at Lightning's step; a new ``epoch`` value moves fanlog's epoch on."""
        logger = self.experiment
        epoch = metrics.get("epoch")
        if epoch is not None:
            while logger.epoch < int(epoch):
                logger.end_epoch()
        step = None if step is None else int(step)
        for key, value in metrics.items():
            name = f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}" if self._prefix else key
            logger.log(value, name, kind="metric", step=step)

    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Forward hyperparameters as fanlog params (nested keys joined with '/')."""
        self.experiment.save_hyperparameters(_plain_params(params))

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Forward ``(model, example input)`` as ``kind="torch"`` when ``log_graph`` is on."""
        if not self._log_graph:
            return
        example = input_array if input_array is not None else getattr(model, "example_input_array", None)
        logger = self.experiment
        if example is None or not logger.supports("torch"):
            return
        # The copy is traced later, detached from the trainer, where `module.trainer` raises;
        # Lightning's flag for tracing makes it return None. It is set only while `log`
        # serialises the module (on this thread), so the live module is unchanged.
        marked = isinstance(model, _pl.LightningModule) and "_jit_is_scripting" not in vars(model)
        if marked:
            model._jit_is_scripting = True
        try:
            logger.log((model, example), "graph", kind="torch")
        finally:
            if marked:
                del model._jit_is_scripting

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Remember the callback; with ``log_model="all"`` log what it just saved."""
        self._checkpoint_callback = checkpoint_callback
        if self._log_model == "all":
            self._log_checkpoints(checkpoint_callback)

    def save(self) -> None:
        """Nothing to save: fanlog's journal is durable on its own."""

    def finalize(self, status: str) -> None:
        """Log the kept checkpoints (``log_model=True``) and end the run with `status`.

        Lightning calls this with ``"success"`` at the end of fit/test and ``"failed"`` when
        the trainer stops on an exception; they become FINISHED and FAILED.
        """
        logger = self._logger
        if not logger.is_active:
            return
        if self._log_model is True and self._checkpoint_callback is not None:
            self._log_checkpoints(self._checkpoint_callback)
        if self._owns_run:
            logger.destroy_logger_context(run_status(status))
            self._owns_run = False
        else:
            logger.flush()

    # ------------------------------------------------------------------ checkpoints
    def _log_checkpoints(self, callback: Any) -> None:
        """Log checkpoint files not logged yet (or changed since), best first."""
        logger = self.experiment
        if not logger.supports("artifact"):
            return
        best_k: dict[str, Any] = dict(getattr(callback, "best_k_models", {}) or {})
        paths = list(best_k)
        for extra in (getattr(callback, "best_model_path", ""), getattr(callback, "last_model_path", "")):
            if extra and extra not in paths:
                paths.append(extra)
        for path in paths:
            if not os.path.isfile(path):
                continue
            mtime = os.path.getmtime(path)
            if self._logged_checkpoints.get(path) == mtime:
                continue
            self._logged_checkpoints[path] = mtime
            score = best_k.get(path)
            options: dict[str, Any] = {"artifact_path": "checkpoints"}
            if score is not None:
                options["score"] = float(score)
                options["monitor"] = getattr(callback, "monitor", None)
            logger.log(path, f"checkpoints/{os.path.basename(path)}", kind="artifact", **options)


def _world_size(module: Any) -> int:
    trainer = getattr(module, "_trainer", None)
    if trainer is not None:
        return int(getattr(trainer, "world_size", 1))
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def log_on_epoch(
    module: Any,
    name_or_dict: str | Mapping[str, Any],
    value: Any = None,
    reduce_fx: str | Any = "mean",
    sync_dist: bool | None = None,
) -> None:
    """``module.log`` with ``on_epoch=True, on_step=False``; ``sync_dist`` defaults to world size > 1.

    Keeps the calls of a training step consistent: on one device no synchronisation is
    paid, on several the epoch value is reduced across them.
    """
    if isinstance(name_or_dict, Mapping):
        if value is not None:
            raise ValueError("log_on_epoch: give either a dict of metrics or a name and a value")
        metrics = dict(name_or_dict)
    else:
        if value is None:
            raise ValueError(f"log_on_epoch: no value given for metric {name_or_dict!r}")
        metrics = {name_or_dict: value}
    if sync_dist is None:
        sync_dist = _world_size(module) > 1
    for name, item in metrics.items():
        module.log(name, item, on_epoch=True, on_step=False, sync_dist=sync_dist, reduce_fx=reduce_fx)


def log_learning_rate(module: Any, name: str = "learning_rate") -> None:
    """Log the learning rate of every scheduler (per epoch, through :func:`log_on_epoch`).

    One scheduler with one parameter group is logged as `name`; otherwise each value is
    ``name/<scheduler index>/<group index>``. Without schedulers, the optimizers' current
    learning rates are logged the same way.
    """
    schedulers = module.lr_schedulers()
    if schedulers is None:
        optimizers = module.optimizers(use_pl_optimizer=False)
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        rates = [[group["lr"] for group in opt.param_groups] for opt in optimizers]
    else:
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        rates = [list(s.get_last_lr()) for s in schedulers]
    if len(rates) == 1 and len(rates[0]) == 1:
        values = {name: float(rates[0][0])}
    else:
        values = {f"{name}/{i}/{j}": float(lr) for i, lrs in enumerate(rates) for j, lr in enumerate(lrs)}
    log_on_epoch(module, values)
