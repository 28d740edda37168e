"""yProv4ML backend: W3C PROV provenance documents of a training run, written by ``yprov4ml``.

``yprov4ml`` (3.2.4, the last release that imports on Python 3.11, or itwinai's 2.0.9) keeps
its state in one global object per process, saves models into the current working
directory, and walks that directory for a ``requirements.txt`` when a run ends. So the
backend never runs it in the training process: each run gets a small worker process
(:mod:`fanlog.isolated`, serving :mod:`fanlog.backends.prov_worker`, which adapts each call
to the installed version) whose working directory is a scratch
folder inside fanlog's run directory. That gives every run a clean yprov4ml state, keeps the user's
working directory untouched, and lets two ranks (or two loggers) write side by side.

Records travel to the worker over a pipe as plain tuples; models travel as
``torch.save`` bytes of their ``state_dict`` because the worker cannot import the user's
model classes.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import warnings
from collections.abc import Mapping, Sequence
from importlib import metadata, util
from typing import Any, Literal

from pydantic import Field, field_validator

from fanlog.backend import Backend
from fanlog.diagnostics import warn_once
from fanlog.errors import PartialDelivery, RecordRejected, bad_item
from fanlog.isolated import Worker, WorkerError
from fanlog.kinds import Kind, known_kinds, register_kind
from fanlog.kinds.core import snapshot_json
from fanlog.logger import TrackerLogger
from fanlog.options import BackendOptions
from fanlog.record import Record, RunInfo, RunStatus

YPROV4ML_VERSION = "3.2.4"
"""fanlog's pin. itwinai's, 2.0.9 (any 2.0.x), works too: see :mod:`fanlog.backends.prov_worker`."""
CONTEXTS = ("training", "validation", "testing")
"""The values of the ``context`` option (itwinai's contexts)."""
DEFAULTED_KINDS = frozenset({"metric", "param", "system", "flops_pb", "flops_pe", "execution_time", "model"})
"""Kinds that take :attr:`Prov4MLBackend.default_context` when logged without a context
(yprov4ml places models and datasets itself)."""


def supported_version(version: str) -> bool:
    """yprov4ml 2.0.x (itwinai's pin) or 3.2.4 (fanlog's); 3.2.5-3.2.8 do not import on Python 3.11."""
    return version == YPROV4ML_VERSION or version.startswith("2.0.")


def normalize_prov_documents(item: Any, identifier: str) -> dict[str, Any]:
    """A request to write the provenance documents now; `item` may carry options."""
    if item is None:
        return {}
    if isinstance(item, Mapping):
        return snapshot_json("prov_documents", identifier, item, "a mapping of options")
    raise bad_item("prov_documents", identifier, "None or a mapping of options", item)


if "prov_documents" not in known_kinds():
    register_kind(
        Kind(
            "prov_documents",
            normalize_prov_documents,
            "json",
            doc="write the provenance documents now (yProv4ML)",
        )
    )


class Prov4MLOptions(BackendOptions):
    """Options of a yProv4ML run."""

    common_defaults = {"experiment_name": "experiment_name"}

    prov_user_namespace: str = Field("www.example.org", description="the PROV namespace of the user")
    provenance_save_dir: str = Field(
        "mllogs/prov_logs",
        description="where yprov4ml writes "
        "(`<dir>/<experiment_name>_<run id>/`), made absolute at construction",
    )
    save_after_n_logs: int = Field(100, description="yprov4ml flushes a metric to its file every n values")
    create_graph: bool = Field(True, description="also write the graph as .dot")
    create_svg: bool = Field(True, description="also write the graph as .svg (needs graphviz)")
    create_rocrate: bool = Field(False, description="also zip the experiment folder as an RO-Crate")
    metrics_file_type: Literal["csv", "nc", "zarr"] = Field("csv", description="csv, nc (netCDF) or zarr")
    run_id: str | int | None = Field(
        None, description="yprov4ml's run id; default fanlog's run id, which every rank shares"
    )
    start_timeout: float = Field(180.0, description="seconds the worker process may take to start the run")
    call_timeout: float = Field(300.0, description="seconds one call to the worker may take")

    @field_validator("provenance_save_dir")
    @classmethod
    def _absolute(cls, path: str) -> str:
        """Absolute now, on the caller's thread: the worker runs in another directory."""
        return os.path.abspath(path)


class Prov4MLBackend(Backend):
    """Feeds one yprov4ml run, in a worker process of its own, for one rank."""

    name = "prov"
    Options = Prov4MLOptions
    options: Prov4MLOptions
    writers = {
        "metric": "_plain",
        "param": "_plain",
        "system": "_plain",
        "flops_pb": "_plain",
        "flops_pe": "_plain",
        "execution_time": "_plain",
        "dataset": "_plain",
        "model": "_state_dict",
        "best_model": "_state_dict",
        "prov_documents": "_documents",
    }
    """kind → the method that turns a record's value into what the worker process is sent."""
    max_batch = 500
    default_context: str | None = None
    """The context of a record logged without one: None puts it in the run's own activity
    (on yprov4ml 2.0.x, which has no such place for it, the worker uses ``training``);
    compat.itwinai's logger uses ``training``, as itwinai does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.provenance_save_dir = self.options.provenance_save_dir
        self.experiment_name = self.context.experiment_name or "experiment_name"
        self.create_graph = self.options.create_graph
        self.create_svg = self.options.create_svg
        self.experiment_dir: str | None = None
        self.version: str | None = None
        """The yprov4ml version prepare() found installed."""
        self.documents: list[str] = []
        """Files of the last provenance documents written (PROV-JSON, dot, svg)."""
        self._mlflow_target: tuple[str, str] | None = None
        self._worker: _Worker | None = None
        self._run: RunInfo | None = None

    # ------------------------------------------------------------------ caller thread
    def prepare(self) -> None:
        """Check that yprov4ml is installed (without importing it: it imports torch) and
        remember the caller's active MLflow run, which is thread-local in MLflow."""
        if util.find_spec("yprov4ml") is None:
            raise ImportError(
                "yprov4ml is not installed; install it with: pip install 'fanlog[prov]' and "
                f"pip install --no-deps yprov4ml=={YPROV4ML_VERSION} (see docs/backends/prov.md)"
            )
        try:
            version = metadata.version("yprov4ml")
        except metadata.PackageNotFoundError:
            version = "unknown"
        self.version = version
        if not supported_version(version):
            warnings.warn(
                f"fanlog's prov backend is tested with yprov4ml {YPROV4ML_VERSION} and 2.0.9; "
                f"found {version} (3.2.5-3.2.8 do not import on Python 3.11)",
                RuntimeWarning,
                stacklevel=3,
            )
        if self.options.create_rocrate and version.startswith("2."):
            warnings.warn(
                f"create_rocrate=True needs yprov4ml 3.2; {version} does not write the RO-Crate, "
                "so it is skipped",
                RuntimeWarning,
                stacklevel=3,
            )
        if self.create_svg and shutil.which("dot") is None:
            warn_once(
                "create_svg=True needs graphviz's `dot`, which is not on PATH; the SVG "
                "graph is skipped (the PROV-JSON and .dot files are still written)",
                RuntimeWarning,
                stacklevel=3,
            )
            self.create_svg = False
        if self.create_svg:
            self.create_graph = True
        self._mlflow_target = _active_mlflow_run()

    def handoff(self) -> dict[str, Any]:
        return {
            "mlflow_target": self._mlflow_target,
            "create_graph": self.create_graph,
            "create_svg": self.create_svg,
        }

    def take_handoff(self, state: Mapping[str, Any]) -> None:
        target = state.get("mlflow_target")
        self._mlflow_target = (str(target[0]), str(target[1])) if target else None
        self.create_graph = bool(state.get("create_graph", self.create_graph))
        self.create_svg = bool(state.get("create_svg", self.create_svg))

    # ------------------------------------------------------------------ dispatcher thread
    def open(self, run: RunInfo) -> None:
        if self._worker is not None:
            self._worker.stop()
        self._run = run
        workdir = os.path.join(run.run_dir, "prov-cwd")
        os.makedirs(workdir, exist_ok=True)
        os.makedirs(self.provenance_save_dir, exist_ok=True)
        options = self.options
        self._worker = _Worker(workdir, run.rank, options.start_timeout, options.call_timeout)
        reply = self._worker.call(
            "start",
            {
                "experiment_name": self.experiment_name,
                "prov_user_namespace": options.prov_user_namespace,
                "provenance_save_dir": self.provenance_save_dir,
                # Every rank writes its own files; fanlog's log_on_workers decides who logs.
                "collect_all_processes": True,
                "save_after_n_logs": options.save_after_n_logs,
                "rank": run.rank,
                "metrics_file_type": options.metrics_file_type,
                # The same id on every rank: yprov4ml's own numbering races between ranks.
                "use_run_id": options.run_id if options.run_id is not None else run.run_id,
            },
            timeout=options.start_timeout,
        )
        self.experiment_dir = reply["experiment_dir"]

    def write(self, records: Sequence[Record]) -> None:
        worker = self._require_worker()
        resumed = self._run is not None and self._run.resumed
        items = [self._item(record, resumed) for record in records]
        reply = worker.call("write", items)
        for index, documents in reply["documents"]:
            self._publish(documents, records[index])
        if reply["error"] is not None:
            # yprov4ml refused this record for what it is (retrying gives the same answer):
            # skip it, so the records after it still arrive; it stays in the journal.
            done = reply["done"]
            record = records[done]
            raise PartialDelivery(
                done + 1,
                RecordRejected(
                    f"yprov4ml could not store {record.kind} {record.key!r} (seq {record.seq}); "
                    f"it is skipped:\n{reply['error']}",
                    record.seq,
                ),
            )

    def close(self, status: RunStatus) -> None:
        """Write the final documents and stop the worker; the status becomes a param."""
        worker = self._require_worker()
        try:
            reply = worker.call("end", {"status": status.value, **self._document_options({})})
            self.documents = reply["documents"]
        finally:
            worker.stop()
            self._worker = None

    def describe(self) -> str:
        return f"yprov4ml {self.experiment_dir or self.provenance_save_dir}"

    def work_clock(self) -> float | None:
        """The worker's CPU time: a call waiting on a worker that computes is not stalled."""
        worker = self._worker
        return None if worker is None else worker.cpu_seconds()

    # ------------------------------------------------------------------ helpers
    def _require_worker(self) -> _Worker:
        if self._worker is None:
            raise WorkerError("the yprov4ml worker is not running (open() failed or close() ran)")
        return self._worker

    def _item(self, record: Record, resumed: bool) -> tuple[Any, ...]:
        """A record as the plain tuple the worker understands (models as state_dict bytes)."""
        options = record.options or {}
        context = options.get("context")
        if context is None and record.kind in DEFAULTED_KINDS:
            context = self.default_context
        if context is not None and context not in CONTEXTS:
            raise RecordRejected(f"context must be one of {CONTEXTS}; got {context!r}", record.seq)
        extra = {"resumed": resumed, "time_ms": int(record.time * 1000)}
        return (record.kind, record.key, self.write_record(record), record.step, context, extra)

    def _plain(self, record: Record) -> Any:
        return record.value

    def _state_dict(self, record: Record) -> bytes:
        return _state_dict_bytes(record.value)

    def _documents(self, record: Record) -> dict[str, Any]:
        return self._document_options({**(record.options or {}), **record.value})

    def _document_options(self, options: dict[str, Any]) -> dict[str, Any]:
        svg = bool(options.get("create_svg", self.create_svg)) and shutil.which("dot") is not None
        return {
            "create_graph": bool(options.get("create_graph", self.create_graph)) or svg,
            "create_svg": svg,
            "create_rocrate": bool(options.get("create_rocrate", self.options.create_rocrate))
            and not (self.version or "").startswith("2."),
        }

    def _publish(self, documents: list[str], record: Record) -> None:
        """Upload freshly written documents to the caller's MLflow run, when there was one."""
        self.documents = documents
        if self._mlflow_target is None or not record.options.get("upload", True):
            return
        from mlflow.tracking import MlflowClient

        tracking_uri, run_id = self._mlflow_target
        client = MlflowClient(tracking_uri=tracking_uri)
        for path in documents:
            client.log_artifact(run_id, path, artifact_path="prov")


def _active_mlflow_run() -> tuple[str, str] | None:
    """(tracking URI, run id) of the caller thread's active MLflow run, if mlflow is in use."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return None
    run = mlflow.active_run()
    if run is None:
        return None
    return mlflow.get_tracking_uri(), run.info.run_id


def _state_dict_bytes(payload: bytes) -> bytes:
    """The module's state_dict (and its parameter names) as torch.save bytes.

    The worker cannot unpickle a module whose class lives in the user's script, so the
    module is opened here, where its class is importable."""
    import torch

    loaded = torch.load(io.BytesIO(payload), weights_only=False)
    if isinstance(loaded, torch.nn.Module):
        state = {k: v.detach().cpu() for k, v in loaded.state_dict().items()}
        params = [name for name, _ in loaded.named_parameters()]
        cls = type(loaded).__qualname__
    else:  # fanlog's fallback for modules that cannot be pickled
        state = dict(loaded["state_dict"])
        params = list(state)
        cls = str(loaded.get("class", "Module"))
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "params": params, "class": cls}, buffer)
    return buffer.getvalue()


class _Worker(Worker):
    """The yprov4ml worker process of one run: :class:`~fanlog.backends.prov_worker.WorkerState`
    in :mod:`fanlog.isolated`."""

    def __init__(self, workdir: str, rank: int, start_timeout: float, call_timeout: float) -> None:
        # yprov4ml reads the rank for its document from SLURM_PROCID (or torch.distributed,
        # which is not initialised in the worker). The first call ("start") has its own timeout.
        super().__init__(
            "fanlog.backends.prov_worker:WorkerState",
            workdir,
            name="yprov4ml",
            call_timeout=call_timeout,
            env={"SLURM_PROCID": str(rank)},
            final_op="end",
        )


# ---------------------------------------------------------------------------- user-facing
class Prov4MLLogger(TrackerLogger):
    """itwinai's ``Prov4MLLogger`` on fanlog: provenance of a run as W3C PROV documents.

    Log with ``context="training" | "validation" | "testing"`` to place a record in that
    activity of the provenance graph.
    """

    backend_class = Prov4MLBackend

    def log(
        self,
        item: Any,
        identifier: str,
        kind: str = "metric",
        step: int | None = None,
        batch_idx: int | None = None,
        **kwargs: Any,
    ) -> None:
        """As :meth:`Logger.log`; ``context`` must be one of :data:`CONTEXTS` when given."""
        context = kwargs.get("context")
        if context is not None and context not in CONTEXTS:
            raise ValueError(
                f"log(identifier={identifier!r}): context must be one of {CONTEXTS}; got {context!r}"
            )
        super().log(item, identifier, kind, step=step, batch_idx=batch_idx, **kwargs)
