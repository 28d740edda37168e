"""MLflow: batched writes through ``MlflowClient.log_batch``, every kind, FINISHED/FAILED/KILLED.

Per-call MLflow logging costs one HTTP request per metric. This backend receives
the records that piled up in the journal since its last wake-up and sends them as
``log_batch`` requests of up to 1000 metrics, 100 params and 100 tags, so the
training loop never waits on the server and a server outage only delays delivery.

Without a tracking URI (argument or ``MLFLOW_TRACKING_URI``) the run goes to an
SQLite store under the save dir, which works out of the box and is what
``mlflow ui --backend-store-uri sqlite:///<savedir>/mlflow.db`` reads.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from fanlog.backend import Backend, artifact_source, import_tracker, require_tracker
from fanlog.errors import PERMANENT, TRANSIENT, PartialDelivery, RecordRejected, Verdict, reason_of
from fanlog.logger import TrackerLogger
from fanlog.options import BackendOptions
from fanlog.record import Record, RunInfo, RunStatus
from fanlog.secrets import redact, scrub_text

MAX_METRICS_PER_REQUEST = 1000
MAX_PARAMS_PER_REQUEST = 100
MAX_TAGS_PER_REQUEST = 100
MAX_ENTITIES_PER_REQUEST = 1000
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_KEY_LENGTH = 250

RUN_ID_WAIT_SECONDS = 10.0
"""Longest ``MLflowLogger.mlflow_run_id`` waits for the background to open the MLflow run."""
PARENT_WAIT_SECONDS = 10.0
"""How long a rank > 0 looks for rank 0's parent run before reporting it missing (per_rank_runs)."""
BATCHED_KINDS = frozenset({"metric", "param", "tag"})
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")

TAG_RUN_ID = "fanlog.run_id"
TAG_RANK = "fanlog.rank"
TAG_DESCRIPTION = "mlflow.note.content"
TAG_PARENT = "mlflow.parentRunId"
CONTEXT_OPTIONS = ("run_id", "parent_run_id", "run_name")
"""``create_logger_context()`` options the backend honours (itwinai's trainer passes them)."""

# fanlog retries with backoff itself, and keeps what waits on disk; MLflow's own retries
# (7, with backoff, minutes in all) would only hold one request of a dead server. MLflow's
# 120 s request timeout would hold the dispatcher as long on a server that accepts the
# connection and never answers; 30 s still lets the server store a large upload (the
# timeout is per socket wait, not per request). Both are set unless the user set them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class ParamConflictError(RecordRejected):
    """A param was logged again with a different value; MLflow params are immutable."""


PERMANENT_ERROR_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "BAD_REQUEST",
        "MALFORMED_REQUEST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_STATE",
    }
)
"""MLflow error codes that refuse the request for what it holds: the record is rejected."""


def lowest_rank(log_on_workers: int | list[int]) -> int:
    """The first rank that logs: it owns the parent run when ranks get child runs."""
    if isinstance(log_on_workers, int):
        return max(log_on_workers, 0)
    return min(log_on_workers, default=0)


def default_artifact_location(savedir: str | os.PathLike[str]) -> str:
    """Where experiments of the default store keep their artifacts: ``<savedir>/mlartifacts``."""
    return (Path(savedir).resolve() / "mlartifacts").as_uri()


def default_tracking_uri(savedir: str | os.PathLike[str]) -> str:
    """The out-of-the-box store: an SQLite database under the save dir (not the file store).

    The path is percent-quoted: SQLAlchemy reads ``?`` as the start of options and decodes
    ``%41``. When quoting changes the path, the driver is named (``sqlite+pysqlite``): for a
    plain ``sqlite:///`` URI MLflow creates the *quoted* text's parent, a stray directory.
    """
    path = str(Path(savedir).resolve() / "mlflow.db")
    quoted = urllib.parse.quote(path)
    scheme = "sqlite" if quoted == path else "sqlite+pysqlite"
    return f"{scheme}:///{quoted}"


def safe_key(key: str) -> str:
    """A key MLflow accepts: invalid characters become '_', the path is normalised, ≤ 250 chars
    (normalised again after the cut, which can leave a trailing '/' or '/.')."""
    cleaned = _BAD_KEY_CHARS.sub("_", key)
    normal = _normal_path(cleaned)[:MAX_KEY_LENGTH]
    return _normal_path(normal)


def _normal_path(name: str) -> str:
    normal = posixpath.normpath(name).lstrip("/") if name else "_"
    if normal in (".", "") or normal.startswith(".."):
        normal = "_" + normal.strip("./")
    return normal


def artifact_path(path: str, record: Record) -> str:
    """`path` as a path inside the run's artifact directory ('.' for its root; a leading
    '/' is dropped), or :class:`RecordRejected` if it would leave it (MLflow refuses '..')."""
    normal = posixpath.normpath(path).lstrip("/") if path else "."
    if normal == ".." or normal.startswith("../"):
        raise RecordRejected(f"the artifact path {path!r} leaves the run's artifact directory", record.seq)
    return normal or "."


def model_name(path: str) -> str:
    """A LoggedModel name MLflow accepts: no '/', ':', '.', '%' or quotes (e.g. from a
    checkpoint called ``epoch=3.ckpt``)."""
    return re.sub(r"[/:.%\"']+", "-", safe_key(path)).strip("-") or "model"


def status_name(status: RunStatus) -> str:
    return {RunStatus.FINISHED: "FINISHED", RunStatus.FAILED: "FAILED"}.get(status, "KILLED")


def _with_suffix(path: str, suffixes: tuple[str, ...], default: str) -> str:
    return path if path.lower().endswith(suffixes) else path + default


class MLflowOptions(BackendOptions):
    """Options of an MLflow run (also AzureML's, which writes through MLflow)."""

    common_defaults = {"experiment_name": "fanlog"}

    tracking_uri: str | None = Field(
        None,
        description="any URI MLflow accepts; default "
        "MLFLOW_TRACKING_URI, else the URI of a run already active in the process, else an "
        "SQLite store `<savedir>/mlflow.db` (artifacts in `<savedir>/mlartifacts`)",
    )
    run_id: str | None = Field(
        None, description="attach to this existing run (default MLFLOW_RUN_ID), e.g. after a restart"
    )
    parent_run_id: str | None = Field(None, description="make the run a child of this run")
    run_description: str | None = Field(None, description="the run's description in the MLflow UI")
    tags: Mapping[str, Any] | None = Field(None, description="run tags")
    per_rank_runs: bool | None = Field(
        None,
        description="in DDP, the lowest logging rank logs to "
        "the parent run and every other logging rank to a child run below it, tagged with its "
        "rank; default (None): on when the job has more than one process",
    )
    model_flavour: bool = Field(
        True,
        description="log kind='model' with mlflow.pytorch.log_model "
        "(True) or as a state_dict.pt artifact (False)",
    )
    infer_pip_requirements: bool = Field(
        False,
        description="let MLflow infer a model's pip "
        "requirements (it inspects the model in a subprocess: seconds per model, so raise "
        "down_after above them); default: the installed torch version, which fanlog knows",
    )


class MLflowBackend(Backend):
    """Writes one fanlog run (one rank) into one MLflow run."""

    name = "mlflow"
    Options = MLflowOptions
    options: MLflowOptions
    writers = {
        "metric": "_batch_metric",
        "param": "_batch_param",
        "tag": "_batch_tag",
        "text": "_log_text",
        "dict": "_log_dict",
        "figure": "_log_figure",
        "image": "_log_image",
        "artifact": "_log_artifact",
        "model": "_log_model",
        "torch": "_log_torch",
        "dataset": "_log_dataset",
    }
    """Metrics, params and tags join the `log_batch` request being built; every other kind is
    one request of its own."""
    max_batch = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options, context = self.options, self.context
        self.tracking_uri = options.tracking_uri
        """The tracking URI, settled by prepare() (environment, active run, default store)."""
        self.requested_run_id = options.run_id
        self.parent_run_id = options.parent_run_id
        self.experiment_name = context.experiment_name or "fanlog"
        self.run_name = context.run_name
        self.source_tags: dict[str, str] = {}
        """MLflow's context tags (user, source, git), found by prepare() on the caller's thread."""
        self.savedir = context.savedir
        self.run_description = scrub_text(options.run_description or "")
        self.tags = {str(k): scrub_text(str(v)) for k, v in redact(dict(options.tags or {})).items()}
        self.parent_rank = lowest_rank(context.log_on_workers)
        """The rank that owns the parent run when ranks get child runs."""
        self.run_id: str | None = None
        """The MLflow run this backend writes to, once open."""
        self.experiment_id: str | None = None
        self.opened = threading.Event()
        """Set once the run is open, here or (``remote``) in the delivery agent."""
        self.owns_run = True
        self._prepared = False
        self._mlflow: Any = None
        self._client: Any = None
        self._active_run_id: str | None = None
        self._artifact_location: str | None = None
        self._params: dict[str, str] = {}
        self._renamed: dict[str, str] = {}
        self._staging: str | None = None
        self._batch = _Batch()

    # ------------------------------------------------------------ caller thread
    def context_options(self, **options: Any) -> Sequence[str]:
        """itwinai's trainer options: ``run_id`` attaches to that run, ``parent_run_id`` makes
        the run a child of that run (an empty string, as the trainer passes without an MLflow
        logger, means none), ``run_name`` names it. They win over the logger's own options."""
        if options.get("run_id"):
            self.requested_run_id = str(options["run_id"])
        if options.get("parent_run_id"):
            self.parent_run_id = str(options["parent_run_id"])
        if options.get("run_name"):
            self.run_name = str(options["run_name"])
        return [name for name in CONTEXT_OPTIONS if name in options]

    def prepare(self) -> None:
        """Check that MLflow is installed and settle the tracking URI, the run to attach to and
        the source tags. No network, and no import of MLflow: a run the user started is found
        through an MLflow the user imported already (its active run is per thread: looked up here)."""
        require_tracker("mlflow", "mlflow")
        self.source_tags = source_tags()
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        mlflow = sys.modules.get("mlflow")
        active = mlflow.active_run() if mlflow is not None and hasattr(mlflow, "active_run") else None
        if active is not None and self.requested_run_id is None:
            self._active_run_id = active.info.run_id
        if self.requested_run_id is None and os.environ.get("MLFLOW_RUN_ID") and active is None:
            self.requested_run_id = os.environ["MLFLOW_RUN_ID"]
        if self.tracking_uri is None:
            if os.environ.get("MLFLOW_TRACKING_URI"):
                self.tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
            elif active is not None and mlflow is not None:
                self.tracking_uri = mlflow.get_tracking_uri()
            else:
                self.tracking_uri = default_tracking_uri(self.savedir)
        if self.tracking_uri == default_tracking_uri(self.savedir):  # also when given explicitly
            self._artifact_location = default_artifact_location(self.savedir)
        self._prepared = True

    def handoff(self) -> dict[str, Any]:
        return {
            "tracking_uri": self.tracking_uri,
            "requested_run_id": self.requested_run_id,
            "active_run_id": self._active_run_id,
            "source_tags": self.source_tags,
            "artifact_location": self._artifact_location,
        }

    def take_handoff(self, state: Mapping[str, Any]) -> None:
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        self.tracking_uri = state.get("tracking_uri")
        self.requested_run_id = state.get("requested_run_id")
        self._active_run_id = state.get("active_run_id")
        self._artifact_location = state.get("artifact_location")
        self.source_tags = dict(state.get("source_tags") or {})
        self._prepared = True

    def info(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "experiment_id": self.experiment_id}

    def take_info(self, info: Mapping[str, Any]) -> None:
        self.run_id = info.get("run_id")
        self.experiment_id = info.get("experiment_id")
        self.opened.set()

    def describe(self) -> str:
        return f"mlflow {self.tracking_uri or '(not prepared)'}"

    def ui_command(self) -> str:
        """The command that shows this backend's runs in the MLflow UI."""
        return f"mlflow ui --backend-store-uri {self.tracking_uri}"

    # ------------------------------------------------------------ dispatcher thread
    def open(self, run: RunInfo) -> None:
        if not self._prepared:
            self.prepare()
        if self._mlflow is None:
            self._mlflow = import_tracker("mlflow", "mlflow")
        if self.run_id is not None:  # a retried open after the run was already made
            return
        if self.tracking_uri and self.tracking_uri.startswith("sqlite:"):
            Path(self.savedir).mkdir(parents=True, exist_ok=True)
        client = self._client = self._mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        if self._staging is None:  # where bytes become files on their way to the artifact store
            self._staging = tempfile.mkdtemp(prefix="mlflow-", dir=run.run_dir)
        run_id = self.requested_run_id or self._active_run_id
        if run_id is None and (run.resumed or _another_writer(run)):
            run_id = self._find_run(run.run_id, run.rank)
        if run_id is not None:
            self._attach(run_id, owned=run_id != self._active_run_id)
            return
        tags = {**self.source_tags, TAG_RUN_ID: run.run_id, TAG_RANK: str(run.rank), **self.tags}
        if self.run_description:
            tags[TAG_DESCRIPTION] = self.run_description
        parent = self.parent_run_id
        name = self.run_name or run.run_name
        per_rank = self.options.per_rank_runs
        per_rank = per_rank if per_rank is not None else run.world_size > 1
        if per_rank and run.rank != self.parent_rank:
            parent = parent or self._wait_for_parent(run.run_id, self.parent_rank)
            name = f"{name}-rank-{run.rank}"
        if parent:
            tags[TAG_PARENT] = parent
        created = client.create_run(self._experiment_id(), run_name=name, tags=tags)
        self.run_id = created.info.run_id
        self.experiment_id = created.info.experiment_id
        self.owns_run = True
        self.opened.set()

    def _experiment_id(self) -> str:
        client = self._client
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(
                client.create_experiment(self.experiment_name, artifact_location=self._artifact_location)
            )
        except self._mlflow.exceptions.MlflowException:  # another rank created it meanwhile
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def _attach(self, run_id: str, owned: bool) -> None:
        """Continue an existing run (resume, or a run someone else started)."""
        existing = self._client.get_run(run_id)
        self.run_id = run_id
        self.experiment_id = existing.info.experiment_id
        self.owns_run = owned
        self._params = dict(existing.data.params)
        if owned and existing.info.status != "RUNNING":
            self._client.update_run(run_id, status="RUNNING")
        self.opened.set()

    def _find_run(self, fanlog_run_id: str, rank: int) -> str | None:
        experiment = self._client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            return None
        found = self._client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{TAG_RUN_ID}` = '{fanlog_run_id}' and tags.`{TAG_RANK}` = '{rank}'",
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def _wait_for_parent(self, fanlog_run_id: str, parent_rank: int = 0) -> str:
        """The parent run (the lowest logging rank's), which the other ranks' runs hang below.

        Ranks start together, so the parent may not exist yet: look again for a few seconds
        (this is the dispatcher thread), then raise, which makes the dispatcher retry.
        """
        deadline = time.monotonic() + PARENT_WAIT_SECONDS
        parent = self._find_run(fanlog_run_id, parent_rank)
        while parent is None and time.monotonic() < deadline:
            time.sleep(0.5)
            parent = self._find_run(fanlog_run_id, parent_rank)
        if parent is None:
            raise LookupError(
                f"per_rank_runs: rank {parent_rank} has not created the parent MLflow run of fanlog run "
                f"{fanlog_run_id!r} yet in experiment {self.experiment_name!r} (retrying)"
            )
        return parent

    def write(self, records: Sequence[Record]) -> None:
        """Send `records` in order; batchable kinds go out as few `log_batch` requests as possible."""
        batch = self._batch
        batch.clear()
        done = 0
        try:
            for record in records:
                if record.kind in BATCHED_KINDS:
                    if not batch.fits(record.kind):
                        done += self._send(batch)
                    self.write_record(record)
                    continue
                done += self._send(batch)
                try:
                    self._write_one(record)
                except RecordRejected:
                    raise
                except Exception as exc:
                    if self.classify(exc) != PERMANENT:
                        raise
                    raise RecordRejected(reason_of(exc), record.seq) from exc
                done += 1
            done += self._send(batch)
        except RecordRejected as conflict:
            try:
                done += self._send(batch)  # what came before the conflict is still good
            except Exception as exc:
                if done:
                    raise PartialDelivery(done, exc) from exc
                raise
            raise PartialDelivery(done + 1, conflict) from conflict  # skip the refused record
        except Exception as exc:
            if done:
                raise PartialDelivery(done, exc) from exc
            raise

    def _batch_metric(self, record: Record) -> None:
        metric = self._mlflow.entities.Metric(
            self._key(record.key), float(record.value), int(record.time * 1000), record.step
        )
        self._batch.add_metric(metric)

    def _batch_param(self, record: Record) -> None:
        batch, key = self._batch, self._key(record.key)
        value = self._limited("param", key, str(record.value), MAX_PARAM_VALUE_LENGTH)
        known = self._params.get(key, batch.params.get(key))
        if known is None:
            batch.add_param(key, value)
        elif known != value:
            raise ParamConflictError(
                f"MLflow param {key!r} of run {self.run_id} is already {known!r}; it cannot "
                f"be changed to {value!r} (log it as a metric, or use a new run)",
                record.seq,
            )
        else:
            batch.covered += 1  # the same value again: nothing to send

    def _batch_tag(self, record: Record) -> None:
        key = self._key(record.key)
        self._batch.add_tag(key, self._limited("tag", key, str(record.value), MAX_TAG_VALUE_LENGTH))

    def _send(self, batch: _Batch) -> int:
        """One `log_batch` request for what `batch` holds; the number of records it covered."""
        covered = batch.covered
        if not covered:
            return 0
        if batch.metrics or batch.params or batch.tags:
            entities = self._mlflow.entities
            params = [entities.Param(k, v) for k, v in batch.params.items()]
            tags = [entities.RunTag(k, v) for k, v in batch.tags.items()]
            try:
                self._client.log_batch(
                    self.run_id, metrics=batch.metrics, params=params, tags=tags, synchronous=True
                )
            except self._mlflow.exceptions.MlflowException:
                if params:  # maybe another process set a param: learn the run's params
                    with contextlib.suppress(Exception):
                        self._params = dict(self._client.get_run(self.run_id).data.params)
                raise
            self._params.update(batch.params)
        batch.clear()
        return covered

    def classify(self, exc: BaseException) -> Verdict:
        """MLflow's error codes decide: INVALID_PARAMETER_VALUE and the like refuse the
        record; every other MlflowException (unreachable, 5xx, 429, timeouts) is retried."""
        cause = exc.cause if isinstance(exc, PartialDelivery) else exc
        mlflow = self._mlflow
        if mlflow is not None and isinstance(cause, mlflow.exceptions.MlflowException):
            return PERMANENT if cause.error_code in PERMANENT_ERROR_CODES else TRANSIENT
        return super().classify(cause)

    def _key(self, key: str) -> str:
        cleaned = self._renamed.get(key)
        if cleaned is None:
            cleaned = self._renamed[key] = safe_key(key)
            if cleaned != key:
                warnings.warn(
                    f"fanlog mlflow: key {key!r} is not a valid MLflow name; logged as {cleaned!r}",
                    stacklevel=2,
                )
        return cleaned

    @staticmethod
    def _limited(what: str, key: str, value: str, limit: int) -> str:
        if len(value) <= limit:
            return value
        warnings.warn(
            f"fanlog mlflow: {what} {key!r} is {len(value)} characters long; MLflow keeps "
            f"{limit}, so it is truncated",
            stacklevel=2,
        )
        return value[:limit]

    # ------------------------------------------------------------ one request per record
    def _write_one(self, record: Record) -> None:
        """A record of a kind that is not batched: one request (AzureML wraps this call)."""
        self.write_record(record)

    @staticmethod
    def _path(record: Record) -> str:
        """Where in the run's artifacts a record goes: its ``artifact_file`` option or its key,
        below its ``artifact_path`` option."""
        path = str(record.options.get("artifact_file") or record.key)
        prefix = record.options.get("artifact_path")
        if prefix:
            path = posixpath.join(str(prefix), posixpath.basename(path))
        return artifact_path(path, record)

    def _log_text(self, record: Record) -> None:
        suffixes = (".txt", ".md", ".log", ".html", ".json", ".yaml", ".yml", ".csv")
        self._client.log_text(self.run_id, record.value, _with_suffix(self._path(record), suffixes, ".txt"))

    def _log_dict(self, record: Record) -> None:
        path = _with_suffix(self._path(record), (".json", ".yaml", ".yml"), ".json")
        self._client.log_dict(self.run_id, record.value, path)

    def _log_figure(self, record: Record) -> None:
        self._upload_bytes(record.value, _with_suffix(self._path(record), IMAGE_SUFFIXES, ".png"))

    def _log_image(self, record: Record) -> None:
        self._write_image(record, self._path(record))

    def _log_artifact(self, record: Record) -> None:
        self._write_artifact(artifact_source(record), self._path(record))

    def _log_model(self, record: Record) -> None:
        self._write_model(record, self._path(record))

    def _log_torch(self, record: Record) -> None:
        self._upload_bytes(record.value, _with_suffix(self._path(record), (".pt", ".pth", ".bin"), ".pt"))

    def _log_dataset(self, record: Record) -> None:
        self._write_dataset(record)

    def _upload_bytes(self, data: bytes, artifact_file: str) -> None:
        """Store `data` as the artifact file `artifact_file` (a path inside the run)."""
        assert self._staging is not None
        folder = tempfile.mkdtemp(dir=self._staging)
        try:
            local = os.path.join(folder, posixpath.basename(artifact_file))
            with open(local, "wb") as handle:
                handle.write(data)
            directory = posixpath.dirname(posixpath.normpath(artifact_file)) or None
            self._client.log_artifact(self.run_id, local, artifact_path=directory)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _write_image(self, record: Record, path: str) -> None:
        """A path-like identifier (`x.png`) is a static file; a plain key is an image per step."""
        if record.options.get("artifact_file") or path.lower().endswith(IMAGE_SUFFIXES):
            self._upload_bytes(record.value, _with_suffix(path, IMAGE_SUFFIXES, ".png"))
            return
        from PIL import Image

        with Image.open(io.BytesIO(record.value)) as image:
            image.load()
            self._client.log_image(
                self.run_id,
                image,
                key=self._key(record.key),
                step=record.step,
                timestamp=int(record.time * 1000),
                synchronous=True,
            )

    def _write_artifact(self, local: str, path: str) -> None:
        """A file lands at `path`; a directory's content lands below `path`. A `path` of
        '.' (or '') means the run's root, and a trailing '/' is dropped."""
        path = posixpath.normpath(path) if path else "."
        if os.path.isdir(local):
            self._client.log_artifacts(self.run_id, local, artifact_path=None if path == "." else path)
            return
        if path == ".":
            path = os.path.basename(local)
        if posixpath.basename(path) == os.path.basename(local):
            self._client.log_artifact(self.run_id, local, artifact_path=posixpath.dirname(path) or None)
            return
        with open(local, "rb") as handle:
            self._upload_bytes(handle.read(), path)

    def _write_model(self, record: Record, path: str) -> None:
        """An MLflow pytorch model (loadable with mlflow.pytorch.load_model), or its state_dict."""
        import torch

        obj = torch.load(io.BytesIO(record.value), weights_only=False)
        if self.options.model_flavour and isinstance(obj, torch.nn.Module):
            self._log_pytorch_model(obj, model_name(path), record.step)
            return
        state = obj.state_dict() if isinstance(obj, torch.nn.Module) else obj
        if isinstance(state, dict) and "state_dict" in state and "class" in state:
            state = state["state_dict"]  # a module that could not be pickled whole
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self._upload_bytes(buffer.getvalue(), posixpath.join(path, "state_dict.pt"))

    def _log_pytorch_model(self, module: Any, name: str, step: int) -> None:
        """What ``mlflow.pytorch.log_model`` does, through this backend's client.

        ``log_model`` reads the process-wide tracking URI and experiment, which belong to
        the user and may differ from this backend's; the client API does not.
        """
        import mlflow.pytorch
        import torch
        from mlflow.models import Model

        client, entities = self._client, self._mlflow.entities
        model = client.create_logged_model(self.experiment_id, name=name, source_run_id=self.run_id)
        try:
            client.log_outputs(self.run_id, [entities.LoggedModelOutput(model.model_id, step)])
            description = Model(
                artifact_path=model.artifact_location,
                model_uuid=model.model_id,
                run_id=self.run_id,
                model_id=model.model_id,
            )
            assert self._staging is not None
            folder = tempfile.mkdtemp(dir=self._staging)
            try:
                local = os.path.join(folder, "model")
                with _quiet("mlflow.pytorch"):  # its warning about pickle, chosen on purpose
                    mlflow.pytorch.save_model(
                        module,
                        local,
                        mlflow_model=description,
                        pip_requirements=self._model_requirements(torch.__version__),
                        serialization_format="pickle",  # "pt2" would need an input example
                    )
                client.log_model_artifacts(model.model_id, local)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        except BaseException:
            try:
                client.finalize_logged_model(model.model_id, "FAILED")
            except Exception:  # noqa: BLE001 - the original failure matters more
                pass
            raise
        client.finalize_logged_model(model.model_id, "READY")

    def _model_requirements(self, torch_version: str) -> list[str] | None:
        """A model's pip requirements: the torch version (without its local label such as
        ``+cpu``, which PyPI does not serve), or None to have MLflow infer them."""
        if self.options.infer_pip_requirements:
            return None
        return [f"torch=={torch_version.split('+')[0]}"]

    def _write_dataset(self, record: Record) -> None:
        entities = self._mlflow.entities
        description = dict(record.value)
        text = json.dumps(description, sort_keys=True)
        source = description.get("source")
        if isinstance(source, str):
            source_type, source_json = "local", json.dumps({"uri": source})
        else:
            source_type, source_json = "code", json.dumps({"tags": {"fanlog.key": record.key}})
        dataset = entities.Dataset(
            name=str(record.options.get("name") or record.key),
            digest=hashlib.sha256(text.encode()).hexdigest()[:8],
            source_type=source_type,
            source=source_json,
            profile=text,
        )
        context = str(record.options.get("context", "training"))
        tags = [entities.InputTag("mlflow.data.context", context)]
        self._client.log_inputs(self.run_id, [entities.DatasetInput(dataset, tags)])

    def flush(self) -> None:
        """Every `write` is synchronous: what it accepted is already stored."""

    def close(self, status: RunStatus) -> None:
        try:
            if self.run_id is not None and self.owns_run:
                self._client.set_terminated(self.run_id, status=status_name(status))
        finally:
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)
                self._staging = None


def _another_writer(run: RunInfo) -> bool:
    """True if this rank of the run has another journal beside ours: a process that took the
    run over (a ddp_spawn child of a logger started in the parent), whose MLflow run is the
    one to go on with."""
    from fanlog.journal.layout import journal_paths

    try:
        return len(journal_paths(run.run_dir)) > 1
    except FileNotFoundError:  # a backend driven without a journal
        return False


def source_tags() -> dict[str, str]:
    """The tags MLflow's own run context gives a run (``mlflow.tracking.context``), found
    without importing MLflow: user, source name and type, the git commit, branch and remote
    of the script when it is in a repository, and the JSON of ``MLFLOW_RUN_CONTEXT``."""
    tags = {
        "mlflow.user": _user(),
        "mlflow.source.name": sys.argv[0] if sys.argv and sys.argv[0] else "<console>",
        "mlflow.source.type": "LOCAL",
    }
    if sys.argv and sys.argv[0] and os.path.exists(sys.argv[0]):
        tags.update(git_tags(os.path.abspath(sys.argv[0])))
    extra = os.environ.get("MLFLOW_RUN_CONTEXT")
    if extra:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            tags.update({str(k): str(v) for k, v in json.loads(extra).items()})
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        return "unknown"


def git_tags(path: str) -> dict[str, str]:
    """``mlflow.source.git.*`` for the repository holding `path`, as MLflow's GitRunContext
    finds them; nothing if `path` is in no repository, is ignored by it, or git is missing."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", folder, *args], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit or git("check-ignore", "-q", path) is not None:
        return {}
    tags = {"mlflow.source.git.commit": commit}
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        tags["mlflow.source.git.branch"] = branch
    remotes = (git("remote") or "").split()
    url = git("remote", "get-url", remotes[0]) if remotes else None
    if url:
        tags["mlflow.source.git.repoURL"] = scrub_text(_without_credentials(url))
    return tags


def _without_credentials(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Hide one library logger's warnings for the duration of a call."""
    target = logging.getLogger(logger_name)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


class _Batch:
    """What goes into one `log_batch` request, within MLflow's per-request limits."""

    def __init__(self) -> None:
        self.metrics: list[Any] = []
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.covered = 0

    def fits(self, kind: str) -> bool:
        if len(self.metrics) + len(self.params) + len(self.tags) >= MAX_ENTITIES_PER_REQUEST:
            return False
        if kind == "metric":
            return len(self.metrics) < MAX_METRICS_PER_REQUEST
        if kind == "param":
            return len(self.params) < MAX_PARAMS_PER_REQUEST
        return len(self.tags) < MAX_TAGS_PER_REQUEST

    def add_metric(self, metric: Any) -> None:
        self.metrics.append(metric)
        self.covered += 1

    def add_param(self, key: str, value: str) -> None:
        self.params[key] = value
        self.covered += 1

    def add_tag(self, key: str, value: str) -> None:
        self.tags[key] = value  # one request holds one value per tag: the last one wins
        self.covered += 1

    def clear(self) -> None:
        self.metrics, self.params, self.tags, self.covered = [], {}, {}, 0


class MLflowLogger(TrackerLogger):
    """Log to MLflow: a tracking server, Databricks, or by default an SQLite store in `savedir`."""

    backend_class = MLflowBackend

    @property
    def mlflow_run_id(self) -> str | None:
        """The MLflow run being written to. While the run is live and the run is not open yet
        (the delivery agent or the dispatcher opens it in the background), this waits up to
        :data:`RUN_ID_WAIT_SECONDS` for it; None if it is still not open then (the server is
        unreachable), or on a rank that does not log."""
        backend = self.backend
        if not isinstance(backend, MLflowBackend):
            return None
        if backend.run_id is None and self.is_active:
            backend.opened.wait(RUN_ID_WAIT_SECONDS)
        return backend.run_id


def get_mlflow_logger(logger: Any) -> MLflowLogger | None:
    """The MLflowLogger in `logger` (itself, or a member of a LoggersCollection), else None."""
    if isinstance(logger, MLflowLogger):
        return logger
    for member in getattr(logger, "loggers", None) or []:
        found = get_mlflow_logger(member)
        if found is not None:
            return found
    return None
