"""Hugging Face ``transformers.Trainer``: a callback that logs through fanlog.

``Trainer(..., callbacks=[FanlogCallback("loggers.yaml")], report_to="none")`` sends the
training arguments and the model config (as params), every ``Trainer.log`` call
(training and evaluation metrics, at ``state.global_step``) and, with ``log_model``,
checkpoints or the final model to every tracker fanlog is configured for. The trainer
never waits on a tracker, and a tracker that is down gets its records later.

Ranks: the run is opened on every process with the Trainer's process index as rank, and
fanlog's ``log_on_workers`` decides which ranks store records (the Trainer's own
integrations log on ``state.is_world_process_zero`` only, which is ``log_on_workers=0``,
fanlog's default).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

from fanlog import Logger, RunStatus
from fanlog.integrations._common import (
    LoggerSource,
    as_logger,
    close_on_uncaught_exception,
    forget,
    import_framework,
    log_values,
)

import_framework("transformers", "transformers")
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments  # noqa: E402
from transformers.trainer import TRAINING_ARGS_NAME  # noqa: E402
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR  # noqa: E402

LOG_MODEL_CHOICES = (False, True, "all", "end")

# Trainer.log's key prefixes → the section TensorBoard's and W&B's callbacks file them under.
_SECTIONS = (("eval_", "eval/"), ("test_", "test/"))


def sectioned(logs: Mapping[str, Any]) -> dict[str, Any]:
    """Trainer keys as TensorBoard shows them: ``eval_loss`` → ``eval/loss``, ``loss`` → ``train/loss``."""
    named: dict[str, Any] = {}
    for key, value in logs.items():
        for prefix, section in _SECTIONS:
            if key.startswith(prefix):
                named[section + key[len(prefix) :]] = value
                break
        else:
            named["train/" + key] = value
    return named


class FanlogCallback(TrainerCallback):
    """A ``transformers.TrainerCallback`` that forwards the Trainer's records to fanlog.

    Args:
        logger: a fanlog ``Logger`` or ``LoggersCollection``, or a config for
            :func:`fanlog.from_config` (a YAML path, a dict or a list); None reads the file
            named by ``FANLOG_CONFIG``. A logger that is not started when the Trainer first
            logs is started by the callback (rank: the Trainer's process index) and ended when
            training ends; a logger you started yourself is only flushed there.
        log_model: ``False`` (default) logs no model; ``"all"`` logs every checkpoint
            directory as the Trainer saves it; ``True`` logs, when training ends, the
            checkpoints of this training that the Trainer kept (``save_total_limit``), the
            best one marked with ``score`` and ``monitor``; ``"end"`` logs the model as
            training left it (the best one with ``load_best_model_at_end``), written with
            ``save_pretrained``. All as ``kind="artifact"``, by the process that saves them.
        section_keys: ``True`` (default) files metrics as TensorBoard's and W&B's callbacks
            do (``train/loss``, ``eval/loss``, ``test/accuracy``); ``False`` keeps the
            Trainer's own keys (``loss``, ``eval_loss``), as MLflow's callback does.
        log_params: log the training arguments and the model config as params.
    """

    def __init__(
        self,
        logger: LoggerSource = None,
        log_model: bool | str = False,
        section_keys: bool = True,
        log_params: bool = True,
    ) -> None:
        if not (isinstance(log_model, bool) or log_model in ("all", "end")):
            raise ValueError(
                f"FanlogCallback: log_model must be one of {LOG_MODEL_CHOICES}; got {log_model!r}"
            )
        self.logger: Logger = as_logger(logger, "FanlogCallback")
        self.log_model = log_model
        self.section_keys = section_keys
        self.log_params = log_params
        self._owns_run = False
        self._training = False
        self._job_id = self.logger.job_id  # the user's choice; None lets fanlog name each run
        self._run_id: str | None = None  # the run this callback last opened
        self._params_logged_for: str | None = ""  # the run id whose params were logged
        self._saved: list[str] = []  # checkpoint directories this training saved
        self._logged_checkpoints: set[str] = set()
        self._staging: str | None = None  # models waiting for the journal's copy
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ Trainer events
    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if self._training and self._owns_run and self.logger.is_active:
            # The previous train() never reached on_train_end: it raised, and the caller
            # caught the exception (a notebook does). Close that run as failed.
            self._end_run(RunStatus.FAILED)
        self._training = True
        self._saved, self._logged_checkpoints = [], set()
        self._open(args, new_run=True)
        run_info = self.logger.run_info
        run_id = run_info.run_id if run_info is not None else None
        if self.log_params and self._params_logged_for != run_id:
            self._params_logged_for = run_id
            self._log_params(args, model)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs:
            self._log_metrics(args, state, logs)

    def on_predict(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """``Trainer.predict`` metrics (``test_*``), which the Trainer does not pass to ``on_log``."""
        if metrics:
            self._log_metrics(args, state, metrics)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Records logged after this carry the next epoch number."""
        if self.logger.is_active:
            self.logger.end_epoch()

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        assert args.output_dir is not None  # TrainingArguments.__post_init__ sets it
        path = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if not (args.should_save and os.path.isdir(path)):
            return
        self._saved.append(path)
        if self.log_model == "all":
            self._open(args)
            # The Trainer may delete this checkpoint right away (save_total_limit, the end of
            # training), before the journal's writer copies it: log a hard-linked twin.
            self._log_checkpoint(self._stage_checkpoint(args, path), state.global_step)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        """Log the models ``log_model`` asks for, then end the run as finished."""
        self._training = False
        if not self.logger.is_active:
            return
        if self.log_model is True and args.should_save:
            best = os.path.abspath(state.best_model_checkpoint) if state.best_model_checkpoint else None
            marks = {"score": state.best_metric, "monitor": args.metric_for_best_model}
            for path in filter(os.path.isdir, self._saved):
                options = marks if os.path.abspath(path) == best else {}
                self._log_checkpoint(self._stage_checkpoint(args, path), _step_of(path), **options)
        elif self.log_model == "end" and args.should_save and model is not None:
            self._log_final_model(args, model, state.global_step)
        complete = self._end_run(RunStatus.FINISHED) if self._owns_run else self.logger.flush()
        if self._staging is not None and complete:  # else the journal may still refer to it
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    # ------------------------------------------------------------------ the run
    def _open(self, args: TrainingArguments, new_run: bool = False) -> None:
        """Start the logger (with the Trainer's process index as rank) unless it runs already.

        Each ``train()`` gets a new run (or the logger's own ``job_id``); logging after it
        (``evaluate``, ``predict``) reopens the run that training used.
        """
        logger = self.logger
        if logger.is_active:
            return
        reopen = not new_run and self._run_id is not None
        logger.job_id = self._run_id if reopen else self._job_id
        logger.create_logger_context(rank=args.process_index)
        self._owns_run = True
        if logger.run_info is not None:
            self._run_id = logger.run_info.run_id
        close_on_uncaught_exception(logger)

    def _end_run(self, status: RunStatus) -> bool:
        forget(self.logger)
        self._owns_run = False
        return self.logger.destroy_logger_context(status)

    # ------------------------------------------------------------------ records
    def _log_params(self, args: TrainingArguments, model: Any) -> None:
        """The model config, then the training arguments (which win on a shared key, as in
        MLflow's callback). ``to_dict`` masks ``*_token`` fields; fanlog's param kind then
        redacts every secret-looking key."""
        logger = self.logger
        if not logger.supports("param"):
            return
        params: dict[str, Any] = {}
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            params.update(config.to_dict())
        params.update(args.to_dict())
        for key, value in params.items():
            logger.log(value, str(key), kind="param")

    def _log_metrics(self, args: TrainingArguments, state: TrainerState, logs: Mapping[str, Any]) -> None:
        self._open(args)
        values = sectioned(logs) if self.section_keys else dict(logs)
        log_values(self.logger, values, state.global_step, "FanlogCallback", self._warned)

    def _log_checkpoint(self, path: str, step: int, **options: Any) -> None:
        """A checkpoint directory as ``checkpoints/checkpoint-<step>`` (once per directory)."""
        name = os.path.basename(path)
        if name in self._logged_checkpoints or not self.logger.supports("artifact"):
            return
        self._logged_checkpoints.add(name)
        options = {k: v for k, v in options.items() if v is not None}
        self.logger.log(path, f"checkpoints/{name}", kind="artifact", step=step, **options)

    def _log_final_model(self, args: TrainingArguments, model: Any, step: int) -> None:
        """The model as training left it, written with ``save_pretrained``, as ``model``."""
        if not self.logger.supports("artifact"):
            return
        folder = os.path.join(self._staging_dir(args), "model")
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(folder)
        else:  # a plain torch.nn.Module, which Trainer also accepts
            import torch

            os.makedirs(folder, exist_ok=True)
            torch.save(model.state_dict(), os.path.join(folder, "pytorch_model.bin"))
        self.logger.log(folder, "model", kind="artifact", step=step)

    def _stage_checkpoint(self, args: TrainingArguments, path: str) -> str:
        """A twin of `path` made of hard links (no data copied; a copy across file systems).

        The Trainer pickles its arguments, hub token included, into every checkpoint
        (``training_args.bin``); the twin's copy has the ``*_token`` fields emptied.
        """
        twin = os.path.join(self._staging_dir(args), os.path.basename(path))
        shutil.copytree(
            path,
            twin,
            copy_function=_link_or_copy,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(TRAINING_ARGS_NAME),
        )
        if os.path.exists(os.path.join(path, TRAINING_ARGS_NAME)):
            import torch

            torch.save(_without_tokens(args), os.path.join(twin, TRAINING_ARGS_NAME))
        return twin

    def _staging_dir(self, args: TrainingArguments) -> str:
        """Where models wait for the journal's copy: in `output_dir` (the checkpoints' file
        system, so hard links work), removed when the run ends with everything delivered."""
        if self._staging is None:
            assert args.output_dir is not None  # TrainingArguments.__post_init__ sets it
            os.makedirs(args.output_dir, exist_ok=True)
            self._staging = tempfile.mkdtemp(prefix=".fanlog-staging-", dir=args.output_dir)
        return self._staging


def _without_tokens(args: TrainingArguments) -> TrainingArguments:
    """A shallow copy of `args` whose ``*_token`` fields (those ``to_dict`` masks) are None."""
    clean = copy.copy(args)
    for field in dataclasses.fields(args):
        if field.name.endswith("_token") and getattr(args, field.name, None) is not None:
            setattr(clean, field.name, None)
    return clean


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _step_of(checkpoint_dir: str) -> int:
    match = re.search(r"-(\d+)$", checkpoint_dir)
    return int(match.group(1)) if match else 0
