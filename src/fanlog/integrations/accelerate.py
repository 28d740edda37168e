"""Hugging Face Accelerate: a tracker that logs through fanlog.

``Accelerator(log_with=[FanlogTracker("loggers.yaml")])`` makes ``init_trackers``,
``log`` and ``end_training`` reach every tracker fanlog is configured for, without the
loop waiting on any of them. ``accelerator.get_tracker("fanlog").tracker`` is the fanlog
logger, for everything else fanlog logs (images, artifacts, models, ...).

Accelerate calls its trackers on the main process only (``init_trackers`` and ``log`` are
main-process methods of the ``Accelerator``). With ``main_process_only=False`` the
tracker's own methods also work when called on other processes, each opening the run with
its process index as rank; fanlog's ``log_on_workers`` then decides which ranks store.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator, Mapping
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

import_framework("accelerate", "accelerate")
from accelerate.state import PartialState  # noqa: E402
from accelerate.tracking import GeneralTracker, on_main_process  # noqa: E402

RUN_ID_VARIABLE = "FANLOG_RUN_ID"


class FanlogTracker(GeneralTracker):
    """An ``accelerate.tracking.GeneralTracker`` that forwards to a fanlog logger.

    Args:
        logger: a fanlog ``Logger`` or ``LoggersCollection``, or a config for
            :func:`fanlog.from_config` (a YAML path, a dict or a list); None reads the file
            named by ``FANLOG_CONFIG``. A logger that is not started yet is started by
            ``init_trackers`` and ended by ``end_training``; one you started yourself is
            only flushed there.
        main_process_only: as for Accelerate's own trackers (default True): the tracker
            acts on the main process only. False lets its methods run on every process.
    """

    name = "fanlog"
    requires_logging_directory = False

    def __init__(self, logger: LoggerSource = None, main_process_only: bool = True) -> None:
        super().__init__()
        self.main_process_only = main_process_only
        self._logger: Logger = as_logger(logger, "FanlogTracker")
        self._owns_run = False
        self._warned: set[str] = set()

    @property
    def tracker(self) -> Logger:
        """The fanlog logger (started once ``init_trackers`` ran on this process)."""
        return self._logger

    @on_main_process
    def start(self) -> None:
        """Open the fanlog run, with the process index as rank (``init_trackers`` calls this)."""
        self._open()

    @on_main_process
    def store_init_configuration(self, values: Mapping[str, Any]) -> None:
        """``init_trackers(config=...)``: one param per top-level key, as MLflow's tracker stores
        them (a nested value becomes JSON text). Secret-looking keys are redacted by fanlog."""
        self._open()
        if not self._logger.supports("param"):
            return
        for key, value in values.items():
            self._logger.log(value, str(key), kind="param")

    @on_main_process
    def log(self, values: Mapping[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """``accelerator.log(values, step=...)``: numbers as metrics, strings as text.

        A dict of numbers (TensorBoard's ``add_scalars`` form) becomes one metric per entry,
        ``<key>/<name>``. Without `step` each key counts its own calls (fanlog's rule).
        `kwargs` (``log_kwargs={"fanlog": {...}}``) reach ``Logger.log``, e.g. ``batch_idx=``
        for ``log_freq``.
        """
        self._open()
        flat: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, Mapping):
                flat.update({f"{key}/{name}": item for name, item in value.items()})
            else:
                flat[key] = value
        log_values(self._logger, flat, step, "FanlogTracker", self._warned, **kwargs)

    @on_main_process
    def log_images(self, values: Mapping[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Images (PIL, numpy or tensors; a batch becomes a grid) as ``kind="image"``."""
        self._open()
        for key, images in values.items():
            self._logger.log(images, key, kind="image", step=step, **kwargs)

    @on_main_process
    def finish(self) -> None:
        """``end_training()``: end the run as finished (or only flush a logger you started)."""
        logger = self._logger
        if not logger.is_active:
            return
        if self._owns_run:
            forget(logger)
            self._owns_run = False
            logger.destroy_logger_context(RunStatus.FINISHED)
        else:
            logger.flush()

    # ------------------------------------------------------------------ the run
    def _open(self) -> None:
        logger = self._logger
        if logger.is_active:
            return
        state = PartialState()
        with _run_id_without_collective(logger, state.num_processes):
            logger.create_logger_context(rank=state.process_index)
        self._owns_run = True
        close_on_uncaught_exception(logger)


@contextlib.contextmanager
def _run_id_without_collective(logger: Logger, num_processes: int) -> Iterator[None]:
    """Name the run through ``FANLOG_RUN_ID`` while it is opened in a multi-process job.

    fanlog agrees on a run id with a torch.distributed broadcast unless the id comes from
    ``FANLOG_RUN_ID``. Accelerate calls its trackers on the main process only, so the other
    processes would never join that broadcast: the id is named here instead (``job_id=``,
    else ``FANLOG_RUN_ID``, else a new one) and the variable restored afterwards.
    """
    if num_processes <= 1:
        yield
        return
    previous = os.environ.get(RUN_ID_VARIABLE)
    os.environ[RUN_ID_VARIABLE] = logger.job_id or previous or _new_run_id()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_ID_VARIABLE, None)
        else:
            os.environ[RUN_ID_VARIABLE] = previous


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
