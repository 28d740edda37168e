"""``itwinai.loggers`` names on fanlog: switch by changing one import line.

    from itwinai.loggers import MLFlowLogger      # before
    from fanlog.compat.itwinai import MLFlowLogger  # after

Every class keeps itwinai's constructor arguments and defaults, the meaning of
``log(item, identifier, kind, step, batch_idx, **kwargs)``, ``log_freq`` and
``log_on_workers``, and itwinai's ``supported_kinds``. Like itwinai, a kind a logger
does not support is ignored silently (fanlog's own loggers warn instead); pass
``unsupported="warn"`` to get fanlog's behaviour. Any fanlog option (``strict``,
``job_id``, ``flush_interval``, ...) may be added as a keyword.

Where itwinai's kinds go beyond what fanlog's backend for that tracker stores (yProv4ML's
``torch`` and ``carbon``), the core keeps the records in fanlog's journal with no tracker
bit (as ``unsupported="journal"`` does for any kind), readable with :func:`fanlog.read_run`
and deliverable later with ``fanlog sync``. The console prints where its ``torch`` and
``artifact`` records are kept, as itwinai's console did.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from fanlog.backends.console import ConsoleBackend
from fanlog.backends.console import ConsoleLogger as _ConsoleLogger
from fanlog.backends.mlflow import MLflowLogger as _MLflowLogger
from fanlog.backends.mlflow import get_mlflow_logger
from fanlog.backends.prov import Prov4MLLogger as _Prov4MLLogger
from fanlog.backends.tensorboard import TensorBoardLogger as _TensorBoardLogger
from fanlog.backends.wandb import WandBLogger as _WandBLogger
from fanlog.errors import bad_item
from fanlog.kinds import Kind, get_kind, register_kind
from fanlog.kinds.core import normalize_metric
from fanlog.logger import EmptyLogger as _EmptyLogger
from fanlog.logger import LogFreq, Logger, Workers
from fanlog.logger import LoggersCollection as _LoggersCollection
from fanlog.record import Record
from fanlog.tensors import Deferred, numbers_mapping

__all__ = [
    "BASE_EXP_NAME", "ConsoleLogger", "EmptyLogger", "Logger", "LoggersCollection", "MLFlowLogger",
    "Prov4MLLogger", "TensorBoardLogger", "WandBLogger", "get_mlflow_logger",
]  # fmt: skip

BASE_EXP_NAME = "default_experiment"
"""itwinai's default experiment (MLflow) and project (W&B) name."""

ITWINAI_KINDS: dict[str, tuple[str, ...]] = {
    "ConsoleLogger": ("torch", "artifact", "metric"),
    "MLFlowLogger": (
        "metric", "figure", "image", "artifact", "torch", "dict", "param", "text", "model", "dataset",
    ),
    "WandBLogger": ("watch", "metric", "figure", "image", "torch", "dict", "param", "text"),
    "TensorBoardLogger": ("metric", "image", "text", "figure", "torch"),
    "Prov4MLLogger": (
        "metric", "flops_pb", "flops_pe", "system", "carbon", "execution_time", "model",
        "best_model", "torch",
    ),
}  # fmt: skip
"""``supported_kinds`` of each itwinai logger, as itwinai declares them."""

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
    register_kind(Kind("carbon", normalize_carbon, "json", doc="carbon footprint figures"))


class _ItwinaiNames:
    """itwinai's supported_kinds. A kind among them that the tracker does not store is kept
    in the journal only (the gate gives it no tracker bit); others are ignored silently."""

    itwinai_name: str = ""

    @property
    def supported_kinds(self) -> frozenset[str]:
        return frozenset(ITWINAI_KINDS[self.itwinai_name])


class _ConsoleBackend(ConsoleBackend):
    """fanlog's console, and a line for each ``torch`` or ``artifact`` record (itwinai's
    console saved those to files and said so; fanlog's journal already holds them)."""

    writers = {**ConsoleBackend.writers, "torch": "_say_where", "artifact": "_say_where"}

    def _say_where(self, record: Record) -> None:
        print(f"ConsoleLogger: {record.key} ({record.kind}) saved in the journal in "
              f"{self.run.run_dir}", file=self.stream, flush=True)  # fmt: skip


ITWINAI_CLOSE_TIMEOUT = 120.0
"""Seconds ``destroy_logger_context`` waits for delivery (fanlog's default is 30).

itwinai logs synchronously, so its users expect the tracker to hold everything once
``destroy_logger_context()`` returns; a tracker that is down still does not block longer.
"""


def _itwinai_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """itwinai's defaults for fanlog options: unsupported kinds ignored, a patient close."""
    options.setdefault("unsupported", "ignore")
    options.setdefault("close_timeout", ITWINAI_CLOSE_TIMEOUT)
    return options


class ConsoleLogger(_ItwinaiNames, _ConsoleLogger):
    """itwinai's ``ConsoleLogger``: metrics on stdout; ``torch`` and ``artifact`` kept in the journal."""

    itwinai_name = "ConsoleLogger"
    backend_class = _ConsoleBackend

    def __init__(
        self,
        savedir: str = "mllogs",
        log_freq: LogFreq = "epoch",
        log_on_workers: Workers = 0,
        **fanlog_options: Any,
    ) -> None:
        super().__init__(savedir=savedir, log_freq=log_freq, log_on_workers=log_on_workers,
                         **_itwinai_defaults(fanlog_options))  # fmt: skip


class MLFlowLogger(_ItwinaiNames, _MLflowLogger):
    """itwinai's ``MLFlowLogger``: tracking URI from the argument, else ``MLFLOW_TRACKING_URI``,
    else an SQLite store under `savedir` (itwinai used MLflow's file store there)."""

    itwinai_name = "MLFlowLogger"

    def __init__(
        self,
        savedir: str = "mllogs",
        experiment_name: str = BASE_EXP_NAME,
        tracking_uri: str | None = None,
        run_description: str | None = None,
        run_name: str | None = None,
        log_freq: LogFreq = "epoch",
        log_on_workers: Workers = 0,
        **fanlog_options: Any,
    ) -> None:
        super().__init__(
            savedir=savedir, experiment_name=experiment_name, tracking_uri=tracking_uri,
            run_description=run_description, run_name=run_name, log_freq=log_freq,
            log_on_workers=log_on_workers, **_itwinai_defaults(fanlog_options),
        )  # fmt: skip


class WandBLogger(_ItwinaiNames, _WandBLogger):
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
            savedir=savedir, project_name=project_name, log_freq=log_freq,
            log_on_workers=log_on_workers, offline_mode=offline_mode, **_itwinai_defaults(fanlog_options),
        )  # fmt: skip

    live_kinds = {"watch": "_watch_kind"}

    def _watch_kind(self, item: Any, identifier: str, step: int | None = None,
                    batch_idx: int | None = None, **kwargs: Any) -> None:
        """As itwinai: ``log(model, name, kind="watch")`` calls ``wandb.watch(model)``."""
        if self._pipeline is None:
            raise self._not_started("log")
        if self.should_log(batch_idx) and self.backend is not None:
            self.watch(item, **kwargs)


class TensorBoardLogger(_ItwinaiNames, _TensorBoardLogger):
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
            raise ValueError(f"framework must be one of {TENSORBOARD_FRAMEWORKS}; got {framework!r}")
        super().__init__(savedir=savedir, log_freq=log_freq, log_on_workers=log_on_workers,
                         **_itwinai_defaults(fanlog_options))  # fmt: skip
        self.framework = str(framework).lower()


class Prov4MLLogger(_ItwinaiNames, _Prov4MLLogger):
    """itwinai's ``Prov4MLLogger`` (yProv4ML provenance documents)."""

    itwinai_name = "Prov4MLLogger"

    def __init__(
        self,
        prov_user_namespace: str = "www.example.org",
        experiment_name: str = "experiment_name",
        provenance_save_dir: str = "mllogs/prov_logs",
        save_after_n_logs: int = 100,
        create_graph: bool = True,
        create_svg: bool = True,
        log_on_workers: Workers = 0,
        **fanlog_options: Any,
    ) -> None:
        super().__init__(
            prov_user_namespace=prov_user_namespace, experiment_name=experiment_name,
            provenance_save_dir=provenance_save_dir, save_after_n_logs=save_after_n_logs,
            create_graph=create_graph, create_svg=create_svg, log_on_workers=log_on_workers,
            **_itwinai_defaults(fanlog_options),
        )  # fmt: skip


class LoggersCollection(_LoggersCollection):
    """itwinai's ``LoggersCollection``: one call, every logger; unsupported kinds ignored."""

    def __init__(self, loggers: list[Logger], **fanlog_options: Any) -> None:
        super().__init__(loggers, **_itwinai_defaults(fanlog_options))

    live_kinds = {"watch": "_watch_members"}

    def _watch_members(self, item: Any, identifier: str, step: int | None = None,
                       batch_idx: int | None = None, **kwargs: Any) -> None:
        """As itwinai: ``kind="watch"`` reaches the W&B members."""
        if self._pipeline is None:
            raise self._not_started("log")
        for member in self.members():
            if isinstance(member, WandBLogger):
                member.log(item, identifier, "watch", step=step, batch_idx=batch_idx, **kwargs)


class EmptyLogger(_EmptyLogger):
    """itwinai's ``EmptyLogger``: accepts every call and logs nothing."""

    def __init__(
        self,
        savedir: str = "mllogs",
        log_freq: LogFreq = "epoch",
        log_on_workers: Workers = 0,
        **fanlog_options: Any,
    ) -> None:
        super().__init__(savedir=savedir, log_freq=log_freq, log_on_workers=log_on_workers,
                         **fanlog_options)  # fmt: skip
