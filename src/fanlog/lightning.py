"""Lightning integration: a ``lightning.pytorch`` logger that forwards to any fanlog logger.

``Trainer(logger=FanlogLogger(my_fanlog_logger))`` sends Lightning's metrics,
hyperparameters, graph and (with ``log_model``) checkpoints through fanlog, so every
tracker fanlog is configured for receives them without the trainer waiting on any.

Lightning's own loggers only log on global rank 0 (``rank_zero_only``). This adapter
instead starts the fanlog run with the trainer's global rank and lets fanlog's
``log_on_workers`` decide, so ``log_on_workers=-1`` really logs on every rank.

The hi-ml helpers :func:`log_on_epoch` and :func:`log_learning_rate`, with hi-ml's
signatures, make the ``LightningModule.log`` calls of a training step consistent across
single- and multi-device runs.
"""

from __future__ import annotations

import numbers
import os
from argparse import Namespace
from collections.abc import Callable, Mapping
from typing import Any

from fanlog.backend import import_tracker
from fanlog.diagnostics import implied_kinds
from fanlog.logger import Logger as FanlogBaseLogger
from fanlog.record import RunStatus

_pl = import_tracker("lightning.pytorch", "lightning")
import torch  # noqa: E402  (after Lightning: its absence is what the message above explains)
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
        """The experiment's name: the logger's, else its MLflow member's, else the first
        member's that has one, else ``"fanlog"`` (ModelCheckpoint's folder is named after it)."""
        return experiment_name(self._logger)

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
            with implied_kinds():
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
        """Log checkpoint files not logged yet (or changed since), best first. They come from
        the adapter, not from a call the user wrote: a member that cannot store artifacts
        says so once per run at debug level."""
        logger = self.experiment
        if not logger.supports("artifact"):
            return
        best_k: dict[str, Any] = dict(getattr(callback, "best_k_models", {}) or {})
        paths = list(best_k)
        for extra in (getattr(callback, "best_model_path", ""), getattr(callback, "last_model_path", "")):
            if extra and extra not in paths:
                paths.append(extra)
        with implied_kinds():
            for path in paths:
                if not os.path.isfile(path):
                    continue
                mtime = os.path.getmtime(path)
                if self._logged_checkpoints.get(path) == mtime:
                    continue
                self._logged_checkpoints[path] = mtime
                self._log_checkpoint(logger, callback, path, best_k.get(path))

    def _log_checkpoint(self, logger: FanlogBaseLogger, callback: Any, path: str, score: Any) -> None:
        """One checkpoint file, as ``checkpoints/<file name>`` with its score and monitor."""
        options: dict[str, Any] = {"artifact_path": "checkpoints"}
        if score is not None:
            options["score"] = float(score)
            options["monitor"] = getattr(callback, "monitor", None)
        logger.log(path, f"checkpoints/{os.path.basename(path)}", kind="artifact", **options)


def experiment_name(logger: FanlogBaseLogger) -> str:
    """The name of the experiment `logger` writes to, for Lightning's ``Logger.name``."""
    if logger.experiment_name:
        return logger.experiment_name
    members = logger.members()
    mlflow = [m for m in members if m.backend_class.name == "mlflow" and m.experiment_name]
    named = mlflow or [m for m in members if m.experiment_name]
    return named[0].experiment_name if named else "fanlog"


class NoTrainerError(AssertionError, RuntimeError):
    """No trainer is attached to the module: hi-ml asserts it (``AssertionError``), Lightning 2
    raises ``RuntimeError`` for a detached module; this error is both."""


def _trainer(module: Any) -> Any:
    try:
        return module.trainer
    except RuntimeError:  # Lightning 2: "... is not attached to a `Trainer`"
        return None


def _as_tensor(value: Any, module: Any) -> Any:
    """A plain number as a tensor on the module's device, with the dtype Lightning's
    ``LightningModule.log`` gives it; tensors and metric objects unchanged."""
    if isinstance(value, numbers.Number) and not isinstance(value, torch.Tensor):
        from lightning.pytorch.trainer.connectors.logger_connector.result import _get_default_dtype

        return torch.tensor(value, dtype=_get_default_dtype(), device=module.device)
    return value


def log_on_epoch(
    module: Any,
    name: str | Mapping[str, Any] | None = None,
    value: Any = None,
    metrics: Mapping[str, Any] | None = None,
    reduce_fx: Callable[..., Any] | str = torch.mean,
    sync_dist: bool | None = None,
) -> None:
    """hi-ml's helper: ``module.log_dict`` with ``on_epoch=True, on_step=False``; ``sync_dist``
    defaults to "the trainer's world size > 1", so one device pays no synchronisation.

    Call forms: ``(module, "loss", value)``, ``(module, name="loss", value=value)``,
    ``(module, metrics={...})``, a name and metrics together, and fanlog's
    ``(module, {"a": x, "b": y})``. Plain numbers become tensors as Lightning would make them.
    """
    if isinstance(name, Mapping):
        if value is not None or metrics is not None:
            raise ValueError("log_on_epoch: give either a dict of metrics or a name and a value")
        metrics, name = name, None
    if name is not None and value is None:
        raise ValueError(
            f"log_on_epoch: no value given for metric {name!r}. Both or neither of "
            "'name' and 'value' must be provided."
        )
    if name is None and value is not None:
        raise ValueError("log_on_epoch: Both or neither of 'name' and 'value' must be provided.")
    trainer = _trainer(module)
    if trainer is None:
        raise NoTrainerError("No trainer is set for this module.")
    if sync_dist is None:
        sync_dist = trainer.world_size > 1
    logged = dict(metrics or {})
    if name is not None:
        logged[name] = value
    tensors = {key: _as_tensor(item, module) for key, item in logged.items()}
    module.log_dict(tensors, on_epoch=True, on_step=False, sync_dist=sync_dist, reduce_fx=reduce_fx)


def log_learning_rate(module: Any, name: str = "learning_rate") -> None:
    """hi-ml's helper: log every scheduler's learning rate per epoch (through
    :func:`log_on_epoch`). One scheduler with one parameter group is logged as `name`;
    otherwise each value is ``name/<scheduler index>/<group index>``. Without a scheduler,
    a ``ValueError``, as in hi-ml."""
    schedulers = module.lr_schedulers()
    if schedulers is None:
        raise ValueError("Learning rate logging can only be used during training.")
    single = not isinstance(schedulers, list)
    schedulers = [schedulers] if single else schedulers
    rates = [list(scheduler.get_last_lr()) for scheduler in schedulers]
    if single and len(rates[0]) == 1:
        logged = {name: rates[0][0]}
    else:
        logged = {f"{name}/{i}/{j}": lr for i, lrs in enumerate(rates) for j, lr in enumerate(lrs)}
    log_on_epoch(module, metrics=logged)
