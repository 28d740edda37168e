"""``itwinai.loggers`` names on fanlog: switch by changing one import line.

    from itwinai.loggers import MLFlowLogger      # before
    from fanlog.compat.itwinai import MLFlowLogger  # after

Every class keeps itwinai's constructor arguments and defaults, the meaning of
``log(item, identifier, kind, step, batch_idx, **kwargs)``, ``log_freq``,
``log_on_workers`` and ``should_log``, itwinai's ``supported_kinds`` (as information),
``is_initialized``, what ``create_logger_context(rank, **options)`` returns, and the
keyword options itwinai's trainer passes to it (``run_id``, ``parent_run_id``, ``run_name``).
The compat ``MLFlowLogger`` also has the MLflow surface itwinai's code reads (see
:mod:`fanlog.compat._itwinai_mlflow`); ``ItwinaiLogger`` is itwinai's Lightning adapter
(:mod:`fanlog.compat.itwinai_lightning`, imported on first use). Any fanlog option
(``strict``, ``job_id``, ``flush_interval``, ...) may be added as a keyword.

A kind a logger's tracker stores reaches it, whatever itwinai's ``supported_kinds`` says
(itwinai's TensorBoard and Prov4ML loggers store hyperparameters their lists leave out); a
kind it does not store is kept in fanlog's journal only (``unsupported="journal"``),
readable with :func:`fanlog.read_run` and deliverable later with ``fanlog sync``. itwinai
dropped those silently. docs/migration-itwinai.md lists every name and call form.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from fanlog.backends.console import ConsoleBackend
from fanlog.backends.console import ConsoleLogger as _ConsoleLogger
from fanlog.backends.mlflow import get_mlflow_logger
from fanlog.backends.prov import Prov4MLBackend
from fanlog.backends.prov import Prov4MLLogger as _Prov4MLLogger
from fanlog.backends.tensorboard import TensorBoardLogger as _TensorBoardLogger
from fanlog.backends.wandb import WandBLogger as _WandBLogger
from fanlog.compat._itwinai_base import BASE_EXP_NAME, ItwinaiSurface, itwinai_defaults
from fanlog.compat._itwinai_mlflow import MLFlowLogger
from fanlog.errors import bad_item
from fanlog.kinds import Kind, get_kind, register_kind
from fanlog.kinds.core import normalize_metric
from fanlog.logger import EmptyLogger as _EmptyLogger
from fanlog.logger import LogFreq, Logger, Workers
from fanlog.logger import LoggersCollection as _LoggersCollection
from fanlog.record import Record, RunStatus
from fanlog.tensors import Deferred, numbers_mapping

__all__ = [
    "BASE_EXP_NAME",
    "ConsoleLogger",
    "EmptyLogger",
    "Logger",
    "LoggersCollection",
    "MLFlowLogger",
    "Prov4MLLogger",
    "TensorBoardLogger",
    "WandBLogger",
    "get_mlflow_logger",
]  # (ItwinaiLogger is resolved on first use: it imports Lightning)
TENSORBOARD_FRAMEWORKS = ("pytorch", "tensorflow")


def normalize_carbon(item: Any, identifier: str) -> dict[str, float] | Deferred:
    """Carbon footprint figures: a mapping of numbers, or one number (kg CO2-eq).

    fanlog does not measure emissions itself; None records that nothing was measured.
    """
    if item is None:
        return {}
    if isinstance(item, Mapping):
        return numbers_mapping({str(k): normalize_metric(v, f"{identifier}/{k}") for k, v in item.items()})
    if isinstance(item, numbers.Real) and not isinstance(item, bool):
        return {"emissions_kg": float(item)}
    raise bad_item("carbon", identifier, "None, a number (kg CO2-eq) or a mapping of numbers", item)


try:
    get_kind("carbon")
except ValueError:
    register_kind(
        Kind("carbon", normalize_carbon, "json", doc="carbon footprint figures", default_key="carbon")
    )


class _ConsoleBackend(ConsoleBackend):
    """fanlog's console, a line for each ``torch`` or ``artifact`` record (itwinai's console
    saved those to files and said so; fanlog's journal already holds them), and itwinai's
    line for a "metric" that is not a number."""

    writers = {
        **ConsoleBackend.writers,
        "torch": "_say_where",
        "artifact": "_say_where",
        "text": "_text_or_metric",
    }

    def _say_where(self, record: Record) -> None:
        print(
            f"ConsoleLogger: {record.key} ({record.kind}) saved in the journal in {self.run.run_dir}",
            file=self.stream,
            flush=True,
        )

    def _text_or_metric(self, record: Record) -> None:
        if record.options.get("itwinai_kind") == "metric":
            print(f"ConsoleLogger: {record.key} = {record.value}", file=self.stream, flush=True)
        else:
            self._print_text(record)


def _is_metric(item: Any, identifier: str) -> bool:
    """True if fanlog's metric kind takes `item` (a real number, as a scalar of any type)."""
    if type(item) is float or type(item) is int:
        return True
    try:
        normalize_metric(item, identifier)
    except (TypeError, ValueError):
        return False
    return True


class ConsoleLogger(ItwinaiSurface, _ConsoleLogger):
    """itwinai's ``ConsoleLogger``: metrics on stdout; ``torch`` and ``artifact`` kept in the
    journal; a "metric" that is not a number printed as itwinai prints it (and kept as text)."""

    itwinai_name = "ConsoleLogger"
    backend_class = _ConsoleBackend

    def __init__(
        self,
        savedir: str = "mllogs",
        log_freq: LogFreq = "epoch",
        log_on_workers: Workers = 0,
        **fanlog_options: Any,
    ) -> None:
        super().__init__(
            savedir=savedir,
            log_freq=log_freq,
            log_on_workers=log_on_workers,
            **itwinai_defaults(fanlog_options),
        )

    def log(
        self,
        item: Any,
        identifier: str,
        kind: str = "metric",
        step: int | None = None,
        batch_idx: int | None = None,
        **kwargs: Any,
    ) -> None:
        """As itwinai: ``log("hello", "txt")`` prints ``ConsoleLogger: txt = hello``; the
        journal keeps it as a ``text`` record marked ``itwinai_kind="metric"``."""
        if kind == "metric" and not _is_metric(item, str(identifier)):
            kind, item = "text", str(item)
            kwargs["itwinai_kind"] = "metric"
        super().log(item, identifier, kind, step=step, batch_idx=batch_idx, **kwargs)


class WandBLogger(ItwinaiSurface, _WandBLogger):
    """itwinai's ``WandBLogger``; ``kind="watch"`` hooks ``wandb.watch`` into the model.

    Unlike itwinai, the step you give is kept (itwinai let W&B count its own steps).
    """

    itwinai_name = "WandBLogger"

    def __init__(
        self,
        savedir: str = "mllogs",
        project_name: str = BASE_EXP_NAME,
        log_freq: LogFreq = "epoch",
        log_on_workers: Workers = 0,
        offline_mode: bool = False,
        **fanlog_options: Any,
    ) -> None:
        super().__init__(
            savedir=savedir,
            project_name=project_name,
            log_freq=log_freq,
            log_on_workers=log_on_workers,
            offline_mode=offline_mode,
            **itwinai_defaults(fanlog_options),
        )

    live_kinds = {"watch": "_watch_kind"}

    def _watch_kind(
        self, item: Any, identifier: str, step: int | None = None, batch_idx: int | None = None, **kwargs: Any
    ) -> None:
        """As itwinai: ``log(model, name, kind="watch")`` calls ``wandb.watch(model)``."""
        if self._pipeline is None:
            raise self._not_started("log")
        if self.should_log(batch_idx) and self.backend is not None:
            self.watch(item, **kwargs)


class TensorBoardLogger(ItwinaiSurface, _TensorBoardLogger):
    """itwinai's ``TensorBoardLogger``. fanlog writes TensorBoard event files itself, so
    ``framework`` ("pytorch" or "tensorflow") is checked but needs neither library."""

    itwinai_name = "TensorBoardLogger"

    def __init__(
        self,
        savedir: str = "mllogs",
        log_freq: LogFreq = "epoch",
        framework: str = "pytorch",
        log_on_workers: Workers = 0,
        **fanlog_options: Any,
    ) -> None:
        if str(framework).lower() not in TENSORBOARD_FRAMEWORKS:
            raise ValueError(
                "Accepted values for TensorBoardLogger framework are 'tensorflow' and 'pytorch'. "
                f"Received {framework!r}"
            )
        super().__init__(
            savedir=savedir,
            log_freq=log_freq,
            log_on_workers=log_on_workers,
            **itwinai_defaults(fanlog_options),
        )
        self.framework = str(framework).lower()


class _ItwinaiProvBackend(Prov4MLBackend):
    """fanlog's yProv4ML backend with itwinai's default context."""

    default_context = "training"


class Prov4MLLogger(ItwinaiSurface, _Prov4MLLogger):
    """itwinai's ``Prov4MLLogger`` (yProv4ML provenance documents, yprov4ml 2.0.x or 3.2.x).
    A record without ``context=`` goes to itwinai's default context, ``training``; so do
    the hyperparameters of ``save_hyperparameters``."""

    itwinai_name = "Prov4MLLogger"
    backend_class = _ItwinaiProvBackend

    def __init__(
        self,
        prov_user_namespace: str = "www.example.org",
        experiment_name: str = "experiment_name",
        provenance_save_dir: str = "mllogs/prov_logs",
        save_after_n_logs: int = 100,
        create_graph: bool = True,
        create_svg: bool = True,
        log_freq: LogFreq = "epoch",
        log_on_workers: Workers = 0,
        **fanlog_options: Any,
    ) -> None:
        super().__init__(
            prov_user_namespace=prov_user_namespace,
            experiment_name=experiment_name,
            provenance_save_dir=provenance_save_dir,
            save_after_n_logs=save_after_n_logs,
            create_graph=create_graph,
            create_svg=create_svg,
            log_freq=log_freq,
            log_on_workers=log_on_workers,
            **itwinai_defaults(fanlog_options),
        )


class LoggersCollection(ItwinaiSurface, _LoggersCollection):
    """itwinai's ``LoggersCollection``: one call, every logger; the members gate themselves,
    so ``should_log()`` of the collection is always True, as in itwinai."""

    def __init__(self, loggers: list[Logger], **fanlog_options: Any) -> None:
        super().__init__(loggers, **itwinai_defaults(fanlog_options))

    def should_log(self, batch_idx: int | None = None) -> bool:
        return True

    live_kinds = {"watch": "_watch_members"}

    def _watch_members(
        self, item: Any, identifier: str, step: int | None = None, batch_idx: int | None = None, **kwargs: Any
    ) -> None:
        """As itwinai: ``kind="watch"`` reaches the W&B members."""
        if self._pipeline is None:
            raise self._not_started("log")
        for member in self.members():
            if isinstance(member, WandBLogger):
                member.log(item, identifier, "watch", step=step, batch_idx=batch_idx, **kwargs)


class EmptyLogger(_EmptyLogger):
    """itwinai's ``EmptyLogger``: accepts every call, logs nothing, is never initialized."""

    is_initialized = False

    def __init__(
        self,
        savedir: str = "mllogs",
        log_freq: LogFreq = "epoch",
        log_on_workers: Workers = 0,
        **fanlog_options: Any,
    ) -> None:
        super().__init__(savedir=savedir, log_freq=log_freq, log_on_workers=log_on_workers, **fanlog_options)

    def create_logger_context(self, rank: int | None = None, **kwargs: Any) -> None:  # type: ignore[override]
        super().create_logger_context(rank=rank, **kwargs)

    def destroy_logger_context(self, status: RunStatus | str = RunStatus.FINISHED) -> bool:
        return True


def __getattr__(name: str) -> Any:
    """``ItwinaiLogger`` imports Lightning: only when it is asked for."""
    if name == "ItwinaiLogger":
        from fanlog.compat.itwinai_lightning import ItwinaiLogger

        return ItwinaiLogger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
