"""itwinai's ``MLFlowLogger`` on fanlog, with the surface itwinai's code reads.

itwinai's trainer and its users read the MLflow run itself: ``create_logger_context()``
returns the ``mlflow.ActiveRun`` (the trainer reads ``.info.run_id``), and the logger has
``.active_run``, ``.tracking_uri``, ``.mlflow``, ``.run_id`` and ``resolve_experiment_id()``.
So this class, and only this one, starts the MLflow run on the caller's thread with MLflow's
fluent API when the run starts, as itwinai does, and hands its id to fanlog's MLflow backend,
which attaches to it: every record still goes through the journal and the background
delivery. ``fanlog.MLflowLogger`` never makes a synchronous MLflow call.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fanlog.backend import Backend
from fanlog.backends.mlflow import (
    CONTEXT_OPTIONS,
    TAG_RANK,
    TAG_RUN_ID,
    MLflowBackend,
    default_artifact_location,
    default_tracking_uri,
    status_name,
)
from fanlog.backends.mlflow import MLflowLogger as _MLflowLogger
from fanlog.compat._itwinai_base import BASE_EXP_NAME, ItwinaiSurface, itwinai_defaults
from fanlog.logger import LogFreq, Workers
from fanlog.record import RunInfo, RunStatus


def normalize_tracking_uri(uri: str) -> str:
    """itwinai's rule: a path, or a ``file:`` URI, becomes an absolute ``file:`` URI; any other
    scheme (http, sqlite, databricks, ...) is kept as given."""
    if not uri:
        warnings.warn("an empty MLflow tracking URI means the current directory", UserWarning, stacklevel=3)
        uri = "."
    parsed = urllib.parse.urlparse(uri)
    if not parsed.scheme:
        return Path(uri).resolve().as_uri()
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path)).resolve().as_uri()
    return uri


def resolve_tracking_uri(tracking_uri: str | None, savedir: str) -> str:
    """As itwinai at construction: the argument, else ``MLFLOW_TRACKING_URI``, else the
    default store, normalised. fanlog's default is an SQLite store under `savedir` (itwinai's,
    MLflow's file store, is refused by MLflow 3.15 unless ``MLFLOW_ALLOW_FILE_STORE`` is set)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(savedir)
    return normalize_tracking_uri(uri)


class MLFlowLogger(ItwinaiSurface, _MLflowLogger):
    """itwinai's ``MLFlowLogger``: the MLflow run is started on the caller's thread and
    returned by ``create_logger_context()``; the records are delivered in the background."""

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
            savedir=savedir,
            experiment_name=experiment_name,
            tracking_uri=resolve_tracking_uri(tracking_uri, os.fspath(savedir)),
            run_description=run_description,
            run_name=run_name,
            log_freq=log_freq,
            log_on_workers=log_on_workers,
            **itwinai_defaults(fanlog_options),
        )
        self._experiment_id: str | None = None
        self._fluent: tuple[int, str] | None = None
        """(process, run id) of the MLflow run this logger started with the fluent API."""

    # ------------------------------------------------------------------ itwinai's surface
    @property
    def mlflow(self) -> Any:
        """The ``mlflow`` module (a property, so that the logger stays picklable)."""
        import mlflow

        return mlflow

    @property
    def experiment_id(self) -> str | None:
        """The MLflow experiment's id, once :meth:`resolve_experiment_id` found it."""
        return self._experiment_id

    @property
    def run_id(self) -> str | None:
        """The id of the MLflow run of the last start (None before)."""
        active = self.__dict__.get("active_run")
        return active.info.run_id if active is not None else None

    def resolve_experiment_id(self) -> str:
        """The id of ``experiment_name`` in this logger's store, created if missing (with the
        default store, its artifacts go to ``<savedir>/mlartifacts``)."""
        if self._experiment_id is None:
            client = self.mlflow.MlflowClient(tracking_uri=self.tracking_uri)
            name = self.experiment_name or BASE_EXP_NAME
            found = client.get_experiment_by_name(name)
            if found is not None:
                self._experiment_id = str(found.experiment_id)
            else:
                default = self.tracking_uri == default_tracking_uri(self.savedir)
                if default:
                    Path(self.savedir).mkdir(parents=True, exist_ok=True)
                location = default_artifact_location(self.savedir) if default else None
                self._experiment_id = str(client.create_experiment(name, artifact_location=location))
        return self._experiment_id

    def _context_value(self) -> Any:
        return self.__dict__.get("active_run") if self.backend is not None else None

    # ------------------------------------------------------------------ the run
    def start_context(self, backend: Backend, options: Mapping[str, Any], info: RunInfo) -> Sequence[str]:
        """Start the MLflow run as itwinai does, on this (the caller's) thread: under
        ``parent_run_id`` if given; else the run already active in this thread, if any; else
        a new one (``run_id`` resumes that run). The backend attaches to it."""
        assert isinstance(backend, MLflowBackend)
        mlflow = self.mlflow
        mlflow.set_tracking_uri(self.tracking_uri)
        experiment_id = self.resolve_experiment_id()  # given to start_run: no global experiment
        run_id = options.get("run_id") or None
        parent = options.get("parent_run_id") or None
        active = mlflow.active_run()
        if parent or active is None:
            tags = None if run_id else {TAG_RUN_ID: info.run_id, TAG_RANK: str(info.rank), **backend.tags}
            active = mlflow.start_run(
                run_id=run_id,
                experiment_id=experiment_id,
                parent_run_id=parent,
                run_name=options.get("run_name") or self.run_name,
                tags=tags,
                description=backend.run_description or None,
            )
        self.active_run = active
        self._fluent = (os.getpid(), active.info.run_id)
        backend.context_options(run_id=active.info.run_id)
        return [name for name in CONTEXT_OPTIONS if name in options]

    def run_closed(self, status: RunStatus) -> None:
        """End the fluent run on the thread that closes (the backend already set its status),
        so that MLflow's own exit handler does not mark it FINISHED later."""
        fluent, self._fluent = self._fluent, None
        mlflow = sys.modules.get("mlflow")
        if fluent is None or fluent[0] != os.getpid() or mlflow is None:
            return
        active = mlflow.active_run()
        if active is not None and active.info.run_id == fluent[1]:
            mlflow.end_run(status_name(status))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("active_run", None)
        state["_fluent"] = None
        return state
