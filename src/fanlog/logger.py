"""The user-facing API: Logger, TrackerLogger, LoggersCollection and EmptyLogger.

Names and meanings follow ``itwinai.loggers`` so that its users can switch by
changing an import. ``log()`` gates (``log_freq``, ``log_on_workers``), normalizes
the item for its kind, and hands a tuple to the pipeline; it does no I/O, except that an
artifact is captured (hard-linked or copied into the run) at the call.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from typing import Any, ClassVar

from fanlog import forking as _forking  # noqa: F401 - registers the fork hooks
from fanlog import lifecycle, secrets
from fanlog.backend import JOURNAL_ONLY_BIT, AllKinds, Backend
from fanlog.errors import BackendError, LoggerNotStartedError, RecordRejected
from fanlog.journal import open_writer
from fanlog.kinds import _REGISTRY, Kind, get_kind
from fanlog.options import BackendContext
from fanlog.pipeline import Pipeline, PipelineSettings
from fanlog.rank import agree_on, detect_rank, detect_world_size, job_id_from_env
from fanlog.record import RunInfo, RunStatus
from fanlog.validate import INT64_MAX, check_index

LogFreq = int | str
Workers = int | list[int]
UNSUPPORTED_POLICIES = ("warn", "raise", "ignore", "journal")
_BATCH, _EPOCH, _EVERY = 0, 1, 2


def validate_log_freq(log_freq: Any) -> tuple[int, int]:
    """(mode, n) for a log_freq, or a ValueError that says what is accepted."""
    if log_freq == "batch":
        return _BATCH, 1
    if log_freq == "epoch":
        return _EPOCH, 0
    if isinstance(log_freq, int) and not isinstance(log_freq, bool) and log_freq > 0:
        return _EVERY, log_freq
    raise ValueError(f"log_freq must be 'batch', 'epoch' or an int > 0; got {log_freq!r}")


def validate_workers(log_on_workers: Any) -> Workers:
    if isinstance(log_on_workers, int) and not isinstance(log_on_workers, bool):
        if log_on_workers < -1:
            raise ValueError(f"log_on_workers must be a rank >= 0 or -1 (all); got {log_on_workers}")
        return log_on_workers
    if isinstance(log_on_workers, (list, tuple, set)) and all(
        isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in log_on_workers
    ):
        return sorted(log_on_workers)
    raise ValueError(
        f"log_on_workers must be a rank, -1 for all ranks, or a list of ranks; got {log_on_workers!r}"
    )


def rank_logs(log_on_workers: Workers, rank: int) -> bool:
    if isinstance(log_on_workers, int):
        return log_on_workers == -1 or log_on_workers == rank
    return rank in log_on_workers


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level, keys joined with '/' (as Lightning does)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name))
        else:
            flat[name] = value
    return flat


def _settings_from(options: dict[str, Any]) -> PipelineSettings:
    names = {f.name for f in fields(PipelineSettings)}
    unknown = set(options) - names
    if unknown:
        raise TypeError(
            f"unknown logger option(s) {sorted(unknown)}; pipeline options are {sorted(names)}"
        )
    return PipelineSettings(**options)


class _KindGate:
    """Which members take a kind: built once per kind, so log() only checks log_freq.

    ``members`` holds (bit, every) where every is 1 for 'batch', n for an int log_freq and
    0 for 'epoch' (never with a batch_idx). ``every`` is their common value when they all
    agree (the usual case: one test instead of a loop), else 0. ``normalize`` is the kind's
    normalizer, for artifacts followed by the capture into the run.
    """

    __slots__ = ("kind", "normalize", "all_bits", "members", "every")

    def __init__(self, kind: Any, all_bits: int, members: list[tuple[int, int]],
                 normalize: Callable[[Any, str], Any]) -> None:
        self.kind = kind
        self.normalize = normalize
        self.all_bits = all_bits
        self.members = [m for m in members if m[1]]
        everies = {every for _, every in members}
        self.every = everies.pop() if len(everies) == 1 else 0


class Logger(ABC):
    """Base of every fanlog logger.

    Args:
        savedir: where the journal (and file-based trackers) write; default ``mllogs``.
        log_freq: ``'batch'`` (every call), ``'epoch'`` (only calls without ``batch_idx``) or
            an int n (calls whose ``batch_idx % n == 0``, plus calls without ``batch_idx``).
        log_on_workers: the rank that logs, ``-1`` for all ranks, or a list of ranks.
        experiment_name, run_name: names shown by trackers that have them.
        job_id: the run id shared by every rank (default: from the launcher, else generated).
        unsupported: what to do with a kind a backend does not support: ``'warn'`` once per
            (backend, kind), ``'raise'`` or ``'ignore'``.
        strict: raise backend errors (at the next call) instead of only recording them.
        name: this backend's name in the journal's delivery table (default: the backend's).
        **pipeline: :class:`fanlog.pipeline.PipelineSettings` fields (``flush_interval``, ...).
    """

    live_kinds: ClassVar[dict[str, str]] = {}
    """Kinds that act on a live object instead of becoming a record (itwinai's ``kind="watch"``):
    kind → name of a method called as ``method(item, identifier, step=, batch_idx=, **kwargs)``."""

    def __init__(
        self,
        savedir: str | os.PathLike[str] = "mllogs",
        log_freq: LogFreq = "epoch",
        log_on_workers: Workers = 0,
        experiment_name: str | None = None,
        run_name: str | None = None,
        job_id: str | None = None,
        unsupported: str = "warn",
        strict: bool = False,
        name: str | None = None,
        **pipeline: Any,
    ) -> None:
        self.savedir = os.fspath(savedir)
        self._freq = validate_log_freq(log_freq)
        self.log_freq = log_freq
        self.log_on_workers = validate_workers(log_on_workers)
        if unsupported not in UNSUPPORTED_POLICIES:
            raise ValueError(f"unsupported must be one of {UNSUPPORTED_POLICIES}; got {unsupported!r}")
        self.unsupported = unsupported
        self.strict = strict
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.job_id = job_id
        self.name = name
        self.settings = _settings_from(pipeline)
        self.rank: int | None = None
        self.run_info: RunInfo | None = None
        self.journal_path: str | None = None
        self._pipeline: Pipeline | None = None
        self._owner: Logger | None = None
        self._destroyed = False
        self._bit = 0
        self._gates: dict[str, _KindGate] = {}
        self._warned: set[tuple[str, str]] = set()
        self._errors: dict[str, list[str]] = {}
        self._strict_error: BaseException | None = None
        self._started_in: int | None = None

    # ------------------------------------------------------------------ itwinai names
    @property
    def worker_rank(self) -> int:
        return self.rank if self.rank is not None else detect_rank()

    @property
    def is_active(self) -> bool:
        return self._pipeline is not None

    @property
    @abstractmethod
    def supported_kinds(self) -> frozenset[str]:
        """Kinds this logger stores."""

    @abstractmethod
    def members(self) -> list[TrackerLogger]:
        """The backend loggers behind this logger (itself for a single backend)."""

    def supports(self, kind: str) -> bool:
        """True if at least one backend behind this logger stores `kind`."""
        return any(kind in m.supported_kinds for m in self.members())

    def should_log(self, batch_idx: int | None = None) -> bool:
        """itwinai's rule: without batch_idx always; with it, by log_freq."""
        mode, every = self._freq
        if batch_idx is None or mode == _BATCH:
            return True
        return mode == _EVERY and batch_idx % every == 0

    # ------------------------------------------------------------------ lifecycle
    def create_logger_context(self, rank: int | None = None, **kwargs: Any) -> Logger:
        """Start the run: open the journal and the background workers. Returns self."""
        if self._pipeline is not None:
            warnings.warn(
                f"{type(self).__name__}.create_logger_context() called twice; ignored",
                RuntimeWarning, stacklevel=2,
            )
            return self
        if kwargs:
            raise TypeError(f"create_logger_context() got unexpected options {sorted(kwargs)}")
        self.rank = detect_rank(rank)
        world_size = detect_world_size()
        for logger in (self, *self.members()):
            logger._gates = {}
        job_id = agree_on(self.job_id or job_id_from_env() or _new_run_id())
        run_dir = os.path.abspath(os.path.join(self.savedir, "runs", job_id, f"rank-{self.rank}"))
        _check_writable(self.savedir)
        backends: list[tuple[str, Backend]] = []
        taken: set[str] = set()
        for member in self.members():
            member.rank = self.rank
            if not rank_logs(member.log_on_workers, self.rank):
                member.backend = None
                continue
            backend = member.make_backend()
            prepare = getattr(backend, "prepare", None)
            if prepare is not None:
                prepare()
            name = _unique(member.name or backend.name, taken)
            member.backend = backend
            backends.append((name, backend))
        journal = open_writer(run_dir)  # the first journal of the rank dir no live writer holds
        run = RunInfo(
            run_id=job_id,
            run_name=self.run_name or job_id,
            rank=self.rank,
            world_size=world_size,
            run_dir=run_dir,
            experiment_name=self.experiment_name,
            resumed=journal.existed,
        )
        try:
            pipeline = Pipeline(run, journal, backends, self.settings, self._backend_failed)
        except BaseException:
            journal.close()
            raise
        self.run_info = run
        self.journal_path = journal.path
        pipeline.steps = journal.next_steps() if run.resumed else {}
        journal.set_meta(
            {
                "run_id": run.run_id, "run_name": run.run_name, "rank": run.rank,
                "world_size": world_size, "experiment_name": run.experiment_name,
                "started": time.time(), "status": "running", "pid": os.getpid(),
                "host": os.uname().nodename, "backends": [n for n, _ in backends],
                "journal_mode": "exclusive" if journal.exclusive else "wal",
            }
        )
        by_backend = {id(b): slot for slot, (_, b) in zip(pipeline.slots, backends, strict=True)}
        for member in self.members():
            slot = by_backend.get(id(member.backend)) if member.backend is not None else None
            member._bit = slot.bit if slot is not None else 0
            member._pipeline = pipeline
            member._owner = self
            member.run_info, member.journal_path = run, self.journal_path
        self._pipeline = pipeline
        self._owner = None
        self._destroyed = False
        self._started_in = None
        lifecycle.register(self)
        return self

    def destroy_logger_context(self, status: RunStatus | str = RunStatus.FINISHED) -> bool:
        """Flush, close every backend with `status`, and report backend errors.

        Returns True if every record reached every backend.
        """
        owner = self._owner or self
        pipeline = owner._pipeline
        if pipeline is None:
            return True
        status = RunStatus(status)
        lifecycle.unregister(owner)
        if status is RunStatus.FINISHED and getattr(pipeline, "accumulators", None):
            owner._emit_last_epoch()
        with lifecycle.protected_close(pipeline):  # a Ctrl-C now is raised after the close
            complete = pipeline.close(status)
            for logger in [owner, *owner.members()]:
                logger._pipeline = None
                logger._destroyed = True
                logger._gates = {}
            owner._summarise(pipeline, complete)
        if owner.strict and owner._strict_error is not None:
            error, owner._strict_error = owner._strict_error, None
            raise BackendError(str(error)) from error
        return complete

    @contextlib.contextmanager
    def start_logging(self, rank: int | None = None) -> Iterator[Logger]:
        """Context manager: create, yield, destroy (FAILED on an exception, KILLED on Ctrl-C)."""
        self.create_logger_context(rank=rank)
        try:
            yield self
        except KeyboardInterrupt:
            self.destroy_logger_context(RunStatus.KILLED)
            raise
        except BaseException:
            self.destroy_logger_context(RunStatus.FAILED)
            raise
        self.destroy_logger_context(RunStatus.FINISHED)

    def flush(self, timeout: float | None = None) -> bool:
        """Return once everything logged so far is in the journal and in every healthy backend."""
        pipeline = self._pipeline
        if pipeline is None:
            return True
        done = pipeline.flush(timeout)
        owner = self._owner or self
        if owner.strict and not done and owner._errors and owner._strict_error is None:
            last = next(reversed(owner._errors.values()))[-1]
            owner._strict_error = BackendError(f"records not delivered; last error: {last}")
        self._raise_if_strict()
        return done

    # ------------------------------------------------------------------ logging
    def log(
        self,
        item: Any,
        identifier: str,
        kind: str = "metric",
        step: int | None = None,
        batch_idx: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Log `item` under `identifier` as `kind` (metric, param, text, dict, figure, image,
        artifact, model, torch, histogram, ...). Never blocks on a tracker.

        Extra keyword arguments reach the backends as ``Record.options``, except
        ``reduce=`` (mean/sum/max/min across ranks; every rank must call it) and
        ``on_epoch=True`` with ``reduce_fx=`` (accumulate, log once at ``end_epoch()``):
        see :mod:`fanlog.aggregation`.
        """
        if kwargs and ("reduce" in kwargs or "on_epoch" in kwargs or "reduce_fx" in kwargs):
            if self._pipeline is None:
                raise self._not_started("log")
            from fanlog import aggregation  # cross-rank reduction and epoch accumulation

            aggregation.handle(self, item, identifier, kind, step, batch_idx, kwargs)
            return
        gate = self._gates.get(kind)
        if gate is None:  # first call with this kind, or a live kind: off the hot path
            live = self.live_kinds.get(kind)
            if live is not None:
                getattr(self, live)(item, identifier, step=step, batch_idx=batch_idx, **kwargs)
                return
            gate = self._gate(kind)  # also where "not started" and unsupported="raise" are raised
        if batch_idx is None:
            mask = gate.all_bits
        else:
            if type(batch_idx) is not int or not 0 <= batch_idx <= INT64_MAX:
                batch_idx = check_index(batch_idx, "batch_idx", identifier)
            if gate.every:  # every member taking this kind shares one log_freq
                if batch_idx % gate.every:
                    return
                mask = gate.all_bits
            else:
                mask = 0
                for bit, every in gate.members:
                    if every and not batch_idx % every:
                        mask |= bit
        if not mask:
            return
        if type(identifier) is not str or not identifier:
            identifier = _plain_identifier(identifier, kind)
        if step is not None and (type(step) is not int or not 0 <= step <= INT64_MAX):
            step = check_index(step, "step", identifier)
        value = gate.normalize(item, identifier)
        pipeline = self._pipeline
        if step is None:  # next() of a per-key itertools.count: unique even across threads
            step = next(pipeline.counters.get(identifier) or pipeline.counter(identifier))
        else:
            pipeline.steps[identifier] = step + 1
            if pipeline.counters:  # a given step moves the key's automatic count
                pipeline.counters.pop(identifier, None)
        pipeline.submit(
            (gate.kind, identifier, value, step, batch_idx, pipeline.epoch, time.time(), mask,
             _options(kwargs, kind, identifier) if kwargs else None)
        )
        if self._strict_error is not None:
            self._raise_if_strict()

    def log_metrics(
        self, metrics: Mapping[str, Any], step: int | None = None, batch_idx: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Log several metrics at once (one `log` per entry; kwargs as for `log`)."""
        for identifier, value in metrics.items():
            self.log(value, identifier, "metric", step=step, batch_idx=batch_idx, **kwargs)

    def save_hyperparameters(self, params: Mapping[str, Any]) -> None:
        """Log a (possibly nested) mapping as params; nested keys are joined with '/'."""
        if not isinstance(params, Mapping):
            raise TypeError(f"save_hyperparameters expects a mapping; got {type(params).__name__}")
        for identifier, value in flatten_params(params).items():
            self.log(value, identifier, kind="param")

    def end_epoch(self) -> None:
        """Mark the end of an epoch: records logged after it carry the next epoch number."""
        pipeline = self._pipeline
        if pipeline is None:
            raise self._not_started("end_epoch")
        if getattr(pipeline, "accumulators", None):
            from fanlog import aggregation

            aggregation.end_epoch(self)
        pipeline.epoch += 1

    @property
    def epoch(self) -> int:
        return self._pipeline.epoch if self._pipeline is not None else 0

    @property
    def dropped(self) -> int:
        """Records dropped because the journal writer fell `max_pending` behind."""
        return self._pipeline.dropped if self._pipeline is not None else 0

    @property
    def unstored(self) -> int:
        """Records that could not be stored (set aside in the journal's ``unstored`` table)."""
        return self._pipeline.unstored if self._pipeline is not None else 0

    def delivery_errors(self) -> dict[str, list[str]]:
        """Errors each backend raised so far (lenient mode records them instead of raising)."""
        owner = self._owner or self
        return {name: list(errors) for name, errors in owner._errors.items()}

    # ------------------------------------------------------------------ internals
    def _gate(self, kind: str) -> _KindGate:
        """Build (once) the gate of `kind`: which members take it, with which log_freq."""
        if self._pipeline is None:
            raise self._not_started("log")
        kind_obj = _REGISTRY.get(kind) or get_kind(kind)
        all_bits = 0
        members: list[tuple[int, int]] = []
        refused: list[str] = []
        for member in self.members():
            if not member._bit:
                continue
            if kind in member.supported_kinds:
                # A kind the logger takes but its tracker does not store (compat.itwinai's)
                # is kept in the journal only, as unsupported="journal" does for any kind.
                stored = kind in member.backend_class.supported_kinds
                bit = member._bit if stored else JOURNAL_ONLY_BIT
            elif self.unsupported == "journal":
                bit = JOURNAL_ONLY_BIT
            else:
                refused.append(type(member).__name__)
                continue
            all_bits |= bit
            mode, every = member._freq
            members.append((bit, 1 if mode == _BATCH else every))
        if refused and self.unsupported == "raise":  # not cached: raised on every call
            raise ValueError(f"{refused[0]} does not support kind {kind!r} (unsupported='raise')")
        for name in refused:
            if self.unsupported == "warn" and (name, kind) not in self._warned:
                self._warned.add((name, kind))
                warnings.warn(
                    f"{name} does not support kind {kind!r}; those records are skipped for it",
                    UserWarning, stacklevel=3,
                )
        normalize = kind_obj.normalize
        if kind_obj.storage == "file":  # artifacts enter the run now, on the caller's thread
            normalize = functools.partial(_capture_artifact, kind_obj, self._pipeline)
        gate = _KindGate(kind_obj, all_bits, members, normalize)
        self._gates[kind] = gate
        return gate

    def _use_pipeline(self, pipeline: Any) -> None:
        """Point this logger and its members at another pipeline (a forked child's); the gates
        are rebuilt on the next call."""
        for logger in (self, *self.members()):
            logger._pipeline = pipeline
            logger._gates = {}

    def __getstate__(self) -> dict[str, Any]:
        """A logger reaches another process (spawn, pickle) unstarted: the live run stays here.

        A started logger keeps its run id, so that the other process, once it calls
        create_logger_context(), joins the same run (in a journal of its own).
        """
        state = self.__dict__.copy()
        if self._pipeline is not None and self.run_info is not None:
            state["job_id"] = self.job_id or self.run_info.run_id
            state["_started_in"] = os.getpid()
        state.update(_pipeline=None, _owner=None, _gates={}, _errors={}, _strict_error=None,
                     run_info=None, journal_path=None, _bit=0, _destroyed=False)
        if "backend" in state:
            state["backend"] = None
        return state

    def _emit_last_epoch(self) -> None:
        """Log what `on_epoch=True` accumulated since the last end_epoch() (a final, open epoch)."""
        from fanlog import aggregation

        try:
            aggregation.end_epoch(self)
        except aggregation.ReduceError as exc:
            warnings.warn(f"fanlog: last epoch's aggregates not logged: {exc}", RuntimeWarning,
                          stacklevel=3)

    def _not_started(self, call: str) -> LoggerNotStartedError:
        when = "after destroy_logger_context()" if self._destroyed else (
            "before create_logger_context()")
        started_in = getattr(self, "_started_in", None)
        if started_in is not None and not self._destroyed:
            when += (f" in this process (it was started in process {started_in} and reached this"
                     " one unstarted; call create_logger_context() here)")
        return LoggerNotStartedError(f"{type(self).__name__}.{call}() called {when}")

    def _backend_failed(self, name: str, exc: BaseException) -> None:
        """Called on a background thread: record, warn once per backend, keep going."""
        errors = self._errors.setdefault(name, [])
        errors.append(repr(exc))
        del errors[:-50]
        if len(errors) == 1 and name != "journal":  # the pipeline warns about its journal itself
            then = ("the records after it are still delivered" if isinstance(exc, RecordRejected)
                    else "its records stay in the journal and are retried")  # fmt: skip
            warnings.warn(
                f"fanlog: backend {name!r} failed: {exc!r}; {then} (summary at destroy)",
                RuntimeWarning, stacklevel=2,
            )
        if self.strict:
            self._strict_error = exc
            for member in self.members():
                member._strict_error = exc

    def _raise_if_strict(self) -> None:
        owner = self._owner or self
        if owner.strict and owner._strict_error is not None:
            error, owner._strict_error = owner._strict_error, None
            for member in owner.members():
                member._strict_error = None
            raise BackendError(f"a backend failed (strict mode): {error!r}") from error

    def _summarise(self, pipeline: Pipeline, complete: bool) -> None:
        lagging = [e for e in pipeline.slots if e.delivered < pipeline.committed and not e.closed]
        if not self._errors and complete and not pipeline.dropped:
            return
        lines = [f"fanlog: run {pipeline.run.run_id} rank {pipeline.run.rank} ended with problems:"]
        for name, errors in self._errors.items():
            lines.append(f"  {name}: {len(errors)} error(s), last: {errors[-1]}")
        lines.extend(pipeline.problems())
        for entry in lagging:
            lines.append(
                f"  {entry.name}: records {entry.delivered + 1}..{pipeline.committed} not delivered;"
                f" run `fanlog sync {self.journal_path} --to {entry.backend.name}"
                + ("" if entry.name == entry.backend.name else f" --cursor {entry.name}")
                + "` to deliver them"
            )
        if pipeline.dropped:
            lines.append(f"  {pipeline.dropped} record(s) dropped at the max_pending bound")
        warnings.warn("\n".join(lines), RuntimeWarning, stacklevel=3)


class TrackerLogger(Logger):
    """The user-facing shell of one tracker: ``class XLogger(TrackerLogger): backend_class =
    XBackend``. Its options are the common ones and ``backend_class.Options``, declared once:
    the constructor takes `savedir` positionally and the rest by keyword, checks them all
    (a misspelt option names the closest one), and exposes each as an attribute. Tracker-only
    conveniences (W&B's ``watch``) are methods of the shell."""

    backend_class: ClassVar[type[Backend]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "backend_class" in cls.__dict__ and "__init__" not in cls.__dict__:
            cls.__init__ = _shell_init(cls)  # type: ignore[method-assign]

    def __init__(self, savedir: str | os.PathLike[str] | None = None, **options: Any) -> None:
        from fanlog.logger_options import split

        values = options if savedir is None else {"savedir": savedir, **options}
        common, self.options = split(type(self), values)
        super().__init__(**common)
        self.backend: Backend | None = None

    def __getattr__(self, name: str) -> Any:
        """A tracker option's value (``logger.tracking_uri``); only reached for names that
        are not attributes of their own."""
        options = self.__dict__.get("options")
        if options is not None and name in type(options).model_fields:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def supported_kinds(self) -> frozenset[str]:
        return self.backend_class.supported_kinds

    def members(self) -> list[TrackerLogger]:
        return [self]

    def backend_context(self) -> BackendContext:
        """The common options a backend may derive things from."""
        return BackendContext(os.fspath(self.savedir), self.experiment_name, self.run_name,
                              self.log_on_workers)  # fmt: skip

    def make_backend(self) -> Backend:
        """A fresh backend for one run, built from this logger's declaration."""
        return self.backend_class(self.options, self.backend_context())


BackendLogger = TrackerLogger
"""The former name of :class:`TrackerLogger`."""


def _shell_init(cls: type[TrackerLogger]) -> Callable[..., None]:
    """``cls.__init__``: TrackerLogger's, with the real signature and an ``Args:`` section made
    from the declaration (for help(), inspect.signature and the docs)."""
    from fanlog.logger_options import shell_doc, shell_signature

    def __init__(self: TrackerLogger, savedir: Any = None, **options: Any) -> None:
        super(cls, self).__init__(savedir, **options)

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__module__ = cls.__module__
    __init__.__signature__ = shell_signature(cls)  # type: ignore[attr-defined]
    __init__.__doc__ = shell_doc(cls)
    __init__.__fanlog_shell__ = True  # type: ignore[attr-defined]
    return __init__


class LoggersCollection(Logger):
    """One call, many loggers. Each member keeps its own log_freq and log_on_workers.

    The members share one journal (under ``savedir``) and one writer; each backend has its
    own dispatcher thread, so a broken tracker never stops the others nor the caller.
    """

    def __init__(
        self, loggers: list[Logger], savedir: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> None:
        if not loggers:
            raise ValueError("LoggersCollection needs at least one logger")
        self.loggers = list(loggers)
        savedir = savedir or next((lg.savedir for lg in loggers), "mllogs")
        super().__init__(savedir=savedir, log_freq="batch", log_on_workers=-1, **kwargs)

    def members(self) -> list[TrackerLogger]:
        found: list[TrackerLogger] = []
        for logger in self.loggers:
            found.extend(logger.members())
        return found

    @property
    def supported_kinds(self) -> frozenset[str]:
        kinds = [m.supported_kinds for m in self.members()]
        if any(isinstance(k, AllKinds) for k in kinds):
            return AllKinds()
        return frozenset().union(*kinds)

    def should_log(self, batch_idx: int | None = None) -> bool:
        return any(m.should_log(batch_idx) for m in self.members())


class EmptyLogger(Logger):
    """A logger that does nothing, for code paths that must log somewhere."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    @property
    def supported_kinds(self) -> frozenset[str]:
        return frozenset()

    def members(self) -> list[TrackerLogger]:
        return []

    def create_logger_context(self, rank: int | None = None, **kwargs: Any) -> Logger:
        self.rank = detect_rank(rank)
        return self

    def destroy_logger_context(self, status: RunStatus | str = RunStatus.FINISHED) -> bool:
        return True

    def log(self, item: Any, identifier: str, kind: str = "metric", step: int | None = None,
            batch_idx: int | None = None, **kwargs: Any) -> None:
        return None


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}#{n}"
    taken.add(candidate)
    return candidate


def _plain_identifier(identifier: Any, kind: str) -> str:
    """A str subclass (StrEnum, numpy.str_) as a plain str; anything else is refused."""
    if isinstance(identifier, str) and identifier:
        return str.__str__(identifier)
    raise ValueError(f"log(kind={kind!r}): identifier must be a non-empty str; got {identifier!r}")


def _options(options: dict[str, Any], kind: str, identifier: str) -> dict[str, Any]:
    """The keyword options of a log() call, redacted: they reach the journal and the trackers."""
    try:
        return secrets.redact_options(options)
    except ValueError as exc:  # a structure that contains itself
        raise ValueError(
            f"log(kind={kind!r}, identifier={identifier!r}): expected keyword options without "
            f"circular references ({exc})"
        ) from None


def _capture_artifact(kind: Kind, pipeline: Any, item: Any, identifier: str) -> Any:
    """The artifact kind's check, then its capture into the run (a link or a copy)."""
    return pipeline.capture(kind.normalize(item, identifier), identifier)


def _check_writable(savedir: str) -> None:
    try:
        os.makedirs(savedir, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise OSError(f"fanlog: cannot create the save dir {savedir!r}: {exc.strerror}") from exc
    if not os.access(savedir, os.W_OK | os.X_OK):
        raise PermissionError(f"fanlog: the save dir {savedir!r} is not writable")
