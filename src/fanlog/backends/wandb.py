"""Weights & Biases: every record kept at its own step, online or offline, one run per rank.

Steps. W&B drops a row whose ``step=`` is lower than the last one it saw, which
loses validation metrics logged "in the past" and everything a run resumed from
a checkpoint logs again. fanlog never passes ``step=``: each ``wandb.log`` row
carries the record's step in a metric of our own, ``fanlog/step``, declared with
``define_metric("*", step_metric="fanlog/step")`` so charts use it as x-axis.

Rows. Records arrive from the journal in order; consecutive records of the same
step (metrics, text, dicts, images, histograms) are merged into one
``wandb.log`` call, which is what makes W&B cheap to feed.

Mode. ``mode=None`` means ``WANDB_MODE`` if set, else online when credentials
exist (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` or a ``.netrc`` entry for
the W&B host) and offline otherwise, decided without any network probe. If the
online start fails (a compute node without network), the run falls back to
offline, so nothing waits on a network that is not there; ``wandb sync`` uploads it later.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
from pydantic import Field

from fanlog.backend import Backend, artifact_source, finite_histogram, import_tracker, require_tracker
from fanlog.errors import PartialDelivery, reason_of
from fanlog.logger import TrackerLogger
from fanlog.options import BackendOptions
from fanlog.record import Record, RunInfo, RunStatus

log = logging.getLogger("fanlog")

STEP_METRIC = "fanlog/step"
"""The x-axis of every fanlog chart in W&B; W&B's own `_step` only counts rows."""
RESERVED_KEYS = frozenset({STEP_METRIC, "_step", "_runtime", "_timestamp", "_wandb"})
"""History keys whose values W&B (or fanlog's step) sets: a user's record under one of them
is logged as ``user/<key>`` instead of being overwritten."""
RENAMED_PREFIX = "user/"
ROW_KINDS = frozenset({"metric", "text", "dict", "figure", "image", "histogram"})
"""Kinds that become a value in a `wandb.log` row; the others are config, artifacts or tags."""
ARTIFACT_TYPES = {"artifact": "artifact", "model": "model", "best_model": "model", "torch": "torch"}
MODES = ("online", "offline", "disabled", "shared")
EXIT_CODES = {RunStatus.FINISHED: 0, RunStatus.FAILED: 1, RunStatus.KILLED: 143}
DEFAULT_HOSTS = ("api.forge.coreweave.com", "api.wandb.ai")
"""Hosts whose .netrc entry counts as W&B credentials when WANDB_BASE_URL is not set
(wandb 0.31's default server, and the one before it)."""
_INIT_LOCK = threading.Lock()
"""Two W&B loggers opening at once must not both claim to be the global run."""


def has_credentials(environ: Mapping[str, str] | None = None) -> bool:
    """True if W&B would find an API key: environment or .netrc. Reads files only, no network."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    base_url = env.get("WANDB_BASE_URL")
    hosts = (urlsplit(base_url).netloc,) if base_url else DEFAULT_HOSTS
    path = env.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        entries = netrc.netrc(path)
    except (OSError, netrc.NetrcParseError):
        return False
    return any((entry := entries.authenticators(host)) and entry[2] for host in hosts)


def disable_vendor_telemetry() -> None:
    """Stop wandb's own SDK telemetry for this process, so an offline run stays offline.

    wandb 0.31 decides whether to send its usage telemetry (to its server, by default
    api.forge.coreweave.com) from the process-wide settings, not from the run's
    ``mode``: an offline run started with ``wandb.init(mode="offline")`` still makes
    it probe the server. Best effort: a wandb without this switch is left as it is.
    """
    try:
        from wandb.analytics.opentelemetry import opentelemetry_proxy
    except ImportError:
        return
    disable = getattr(opentelemetry_proxy, "disable", None)
    if callable(disable):
        disable()


def resolve_mode(mode: str | None, offline_mode: bool = False, environ: dict[str, str] | None = None) -> str:
    """The W&B mode to start in; see the module docstring for the rule."""
    env = os.environ if environ is None else environ
    if offline_mode:
        return "offline"
    if mode is None and env.get("WANDB_MODE"):
        mode = {"dryrun": "offline", "run": "online"}.get(env["WANDB_MODE"], env["WANDB_MODE"])
    if mode is None:
        return "online" if has_credentials(env) else "offline"
    if mode not in MODES:
        raise ValueError(f"WandBLogger mode must be one of {MODES} or None; got {mode!r}")
    return mode


def artifact_name(key: str) -> str:
    """A valid W&B artifact name (letters, digits, '-', '_', '.') made from an identifier."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", key).strip("-.") or "artifact"


class WandBOptions(BackendOptions):
    """Options of a W&B run. ``project_name`` is the run's experiment name."""

    sets_common = {"experiment_name": "project_name"}

    project_name: str = Field("fanlog", description="the W&B project (the run's experiment)")
    entity: str | None = Field(None, description="the W&B entity (user or team)")
    group: str | None = Field(
        None,
        description="the group of the ranks' runs (default: the run "
        "name, which every rank of a job agrees on)",
    )
    run_id: str | None = Field(
        None,
        description="the W&B run id (default: a new one, "
        "remembered in the run directory so a resumed run reattaches)",
    )
    resume: bool | str | None = Field(None, description="W&B's resume mode for that run id")
    mode: Literal[MODES] | None = Field(  # type: ignore[valid-type]
        None,
        description="online, offline, disabled or shared; "
        "default WANDB_MODE, else online when credentials exist, else offline",
    )
    offline_mode: bool = Field(False, description="itwinai's spelling of mode='offline'")
    settings: dict[str, Any] | None = Field(None, description="keyword arguments of wandb.Settings")
    init_timeout: float = Field(60.0, description="seconds wandb.init may take")
    histogram_bins: int = Field(
        64, description="bins of a histogram (a record's `bins=` option overrides it, up to 512)"
    )


class WandBBackend(Backend):
    """One W&B run per rank; ranks of one job share a group."""

    name = "wandb"
    Options = WandBOptions
    options: WandBOptions
    writers = {
        "metric": "_plain_value",
        "text": "_plain_value",
        "dict": "_plain_value",
        "figure": "_image_value",
        "image": "_image_value",
        "histogram": "_histogram_value",
        "param": "_config_value",
        "tag": "_add_tag",
        "artifact": "_log_artifact",
        "model": "_log_object",
        "best_model": "_log_object",
        "torch": "_log_object",
    }
    """Row kinds (:data:`ROW_KINDS`) return a value of the `wandb.log` row being built,
    params a value of the config update; the others are one call each."""
    max_batch = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.savedir = self.context.savedir
        self.project_name = self.options.project_name
        self.run_name = self.context.run_name
        self.mode: str | None = None
        self.run: Any = None
        self.run_id: str | None = None
        """The W&B run id, once open (here, or in the delivery agent)."""
        self.opened = threading.Event()
        self._wandb: Any = None
        self._staging: str | None = None
        self._temporary: list[str] = []
        """Files staged for the row being built (W&B copies them when the row is logged)."""
        self._renamed_keys: set[str] = set()

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> None:
        """Check that wandb is installed and decide the mode on the caller's thread (no
        network, no import of wandb)."""
        require_tracker("wandb", "wandb")
        self.mode = resolve_mode(self.options.mode, self.options.offline_mode)

    def handoff(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def take_handoff(self, state: Mapping[str, Any]) -> None:
        self.mode = state.get("mode") or resolve_mode(self.options.mode, self.options.offline_mode)

    def info(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "mode": self.mode}

    def take_info(self, info: Mapping[str, Any]) -> None:
        self.run_id, self.mode = info.get("run_id"), info.get("mode", self.mode)
        self.opened.set()

    def open(self, run: RunInfo) -> None:
        if self.mode is None:  # prepare() was not called
            self.prepare()
        if self._wandb is None:
            self._wandb = import_tracker("wandb", "wandb")
        if self.mode in ("offline", "disabled"):
            disable_vendor_telemetry()
        wandb, mode = self._wandb, self.mode or "offline"
        directory = os.path.abspath(os.path.join(self.savedir, "wandb"))
        os.makedirs(directory, exist_ok=True)
        distributed = run.world_size > 1
        name = self.run_name or run.run_name
        run_id, resume = self._run_id(run)
        kwargs: dict[str, Any] = dict(
            entity=self.options.entity,
            project=self.project_name,
            dir=directory,
            id=run_id,
            name=f"{name}-rank{run.rank}" if distributed else name,
            group=self.options.group or (run.run_name if distributed else None),
            job_type=f"rank{run.rank}" if distributed else None,
            resume=resume,
        )
        try:
            self.run = self._init(wandb, mode, kwargs)
        except Exception as exc:
            if self.options.mode is not None or self.options.offline_mode or mode != "online":
                raise
            log.warning(
                "fanlog wandb: online start failed (%r); logging offline instead, "
                "upload later with `wandb sync`",
                exc,
            )
            # Sticky, so a retry of open() does not wait for the network again; a new id,
            # because W&B's service keeps the failed run's id as "in use".
            mode = self.mode = "offline"
            disable_vendor_telemetry()
            kwargs["id"] = f"{run_id}-offline"
            self._remember_id(run, kwargs["id"])
            self.run = self._init(wandb, mode, kwargs)
        self.mode = mode
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC, step_sync=True)
        self._staging = tempfile.mkdtemp(prefix="wandb-staging-", dir=run.run_dir)
        self.run_id = self.run.id
        self.opened.set()

    def _init(self, wandb: Any, mode: str, kwargs: dict[str, Any]) -> Any:
        """Start the run; it becomes W&B's global run unless the user already has one.

        Being the global run is what makes ``wandb.watch`` hooks (which log to
        ``wandb.run``) land in our run; a run the user started is left alone.
        """
        with _INIT_LOCK:
            reinit = "create_new" if wandb.run is not None else None
            return wandb.init(mode=mode, settings=self._settings(wandb), reinit=reinit, **kwargs)

    def _memo(self, run: RunInfo) -> str:
        return os.path.join(run.run_dir, f"wandb-{artifact_name(self.project_name)}.id")

    def _remember_id(self, run: RunInfo, run_id: str) -> None:
        os.makedirs(run.run_dir, exist_ok=True)
        with open(self._memo(run), "w", encoding="utf-8") as handle:
            handle.write(run_id)

    def _run_id(self, run: RunInfo) -> tuple[str, bool | str | None]:
        """The W&B run id, remembered in the fanlog run directory so a resumed run reattaches."""
        memo = self._memo(run)
        wanted, resume = self.options.run_id, self.options.resume
        if wanted is not None:
            run_id = f"{wanted}-rank{run.rank}" if run.world_size > 1 else wanted
        elif os.path.exists(memo):
            with open(memo, encoding="utf-8") as handle:
                run_id = handle.read().strip()
            resume = resume if resume is not None else "allow"
        else:
            run_id = uuid.uuid4().hex[:8]
        self._remember_id(run, run_id)
        return run_id, resume

    def _settings(self, wandb: Any) -> Any:
        options: dict[str, Any] = {"init_timeout": self.options.init_timeout}
        options.update(self.options.settings or {})
        return wandb.Settings(**options)

    def write(self, records: Sequence[Record]) -> None:
        done = 0
        row: dict[str, Any] = {}
        row_step = 0
        row_count = 0
        params: dict[str, Any] = {}
        try:
            for record in records:
                if record.kind in ROW_KINDS:
                    if params:
                        done += self._update_config(params)
                    key = self._row_key(record.key)
                    if row and (record.step != row_step or key in row):
                        done += self._log_row(row, row_step, row_count)
                        row, row_count = {}, 0
                    try:
                        row[key] = self.write_record(record)
                    except Exception as exc:  # noqa: BLE001 - a retry would fail the same
                        self.reject(record, reason_of(exc))
                    row_step = record.step
                    row_count += 1
                    continue
                if row:
                    done += self._log_row(row, row_step, row_count)
                    row, row_count = {}, 0
                if record.kind == "param":
                    params[record.key] = self.write_record(record)
                    continue
                if params:
                    done += self._update_config(params)
                self.write_record(record)
                done += 1
            if row:
                done += self._log_row(row, row_step, row_count)
            if params:
                done += self._update_config(params)
        except Exception as exc:
            if done:
                raise PartialDelivery(done, exc) from exc
            raise
        finally:
            self._remove_staged()

    def flush(self) -> None:
        """Nothing to do: W&B's service writes each row as it receives it."""

    def close(self, status: RunStatus) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        run.finish(exit_code=EXIT_CODES.get(status, 1))
        if self._staging:
            shutil.rmtree(self._staging, ignore_errors=True)

    def describe(self) -> str:
        where = os.path.join(self.savedir, "wandb")
        return f"wandb {self.mode or 'auto'} project {self.project_name!r} in {where}"

    # ------------------------------------------------------------------ records
    def _row_key(self, key: str) -> str:
        """`key`, or ``user/<key>`` for a key W&B or fanlog sets in every row (said once)."""
        if key not in RESERVED_KEYS:
            return key
        renamed = RENAMED_PREFIX + key
        if key not in self._renamed_keys:
            self._renamed_keys.add(key)
            log.warning(
                "fanlog wandb: %r is set by W&B (or by fanlog, for the step) in every row; logged as %r",
                key,
                renamed,
            )  # a background thread: not warnings
        return renamed

    def _log_row(self, row: dict[str, Any], step: int, count: int) -> int:
        row[STEP_METRIC] = step
        self.run.log(row)
        self._remove_staged()
        return count

    def _remove_staged(self) -> None:
        for path in self._temporary:
            _remove(path)
        self._temporary.clear()

    def _update_config(self, params: dict[str, Any]) -> int:
        count = len(params)
        self.run.config.update(params, allow_val_change=True)
        params.clear()
        return count

    def _plain_value(self, record: Record) -> Any:
        return record.value  # metric: float, text: str, dict: nested dict

    def _config_value(self, record: Record) -> Any:
        return record.value

    def _image_value(self, record: Record) -> Any:
        path = self._stage(record, ".png", record.value)
        self._temporary.append(path)
        return self._wandb.Image(path, caption=record.options.get("caption"))

    def _histogram_value(self, record: Record) -> Any:
        values = np.asarray(record.value, dtype=np.float64).reshape(-1)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError(f"histogram {record.key!r} has no finite value")
        bins = min(512, int(record.options.get("bins", self.options.histogram_bins)))
        counts, edges = finite_histogram(values, bins)
        return self._wandb.Histogram(np_histogram=(counts, edges))

    def _add_tag(self, record: Record) -> None:
        self.run.tags = (*self.run.tags, str(record.value))

    def _new_artifact(self, record: Record) -> Any:
        artifact_type = record.options.get("artifact_type", ARTIFACT_TYPES[record.kind])
        return self._wandb.Artifact(
            artifact_name(record.key),
            type=artifact_type,
            metadata={"step": record.step, "fanlog_key": record.key},
        )

    def _log_artifact(self, record: Record) -> None:
        artifact = self._new_artifact(record)
        path = artifact_source(record)
        if os.path.isdir(path):
            artifact.add_dir(path)
        else:
            artifact.add_file(path, name=os.path.basename(path))
        self.run.log_artifact(artifact)

    def _log_object(self, record: Record) -> None:
        """A model, best model or torch object: its ``torch.save`` bytes as a wandb.Artifact."""
        artifact = self._new_artifact(record)
        aliases = ["best"] if record.kind == "best_model" else None
        path = self._stage(record, ".pt", record.value)
        try:
            artifact.add_file(path, name=os.path.basename(record.key) + ".pt")
            self.run.log_artifact(artifact, aliases=aliases)
        finally:
            _remove(path)

    def _stage(self, record: Record, suffix: str, data: bytes) -> str:
        """Write bytes W&B wants as a file; W&B copies it, and we remove ours afterwards."""
        staging = self._staging or tempfile.gettempdir()
        path = os.path.join(staging, f"{record.seq}-{artifact_name(record.key)}{suffix}")
        with open(path, "wb") as handle:
            handle.write(data)
        return path


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


class WandBLogger(TrackerLogger):
    """Log to Weights & Biases, online or offline, at the steps you give.

    ``offline_mode=True`` is itwinai's spelling of ``mode="offline"``. ``settings``
    goes to ``wandb.Settings`` (it is ``logger.options.settings``: ``logger.settings`` are
    the pipeline's). Ranks that log share ``group`` (default: the run name, which every rank
    of a job agrees on). ``watch(model)`` hooks W&B's gradient and parameter logging into a
    module.
    """

    backend_class = WandBBackend

    def watch(self, model: Any, timeout: float | None = 120.0, **kwargs: Any) -> None:
        """``wandb.watch`` on this logger's run: gradients/parameters of `model` (W&B's kwargs).

        A live module cannot travel through the journal, so this is a method, not a
        kind. It waits (up to `timeout` seconds) for the run to be open.
        """
        backend = self.backend
        if not isinstance(backend, WandBBackend):
            if self.is_active:
                return  # this rank does not log (log_on_workers)
            raise self._not_started("watch")
        if backend.remote:
            raise RuntimeError(
                "WandBLogger.watch hooks the model into the W&B run, which must be "
                "in this process; with delivery='agent' it is in the delivery "
                "agent: use delivery='thread' for a run that watches a model"
            )
        if not backend.opened.wait(timeout):
            raise TimeoutError(f"the W&B run did not open within {timeout} s")
        wandb = backend._wandb
        if wandb.run is not backend.run:
            log.warning(
                "fanlog wandb: another W&B run is active in this process; wandb.watch "
                "hooks log to wandb.run, so gradients may land there"
            )
        backend.run.watch(model, **kwargs)
