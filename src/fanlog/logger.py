"""The user-facing API: Logger, TrackerLogger, LoggersCollection and EmptyLogger.

Names and meanings follow ``itwinai.loggers`` so that its users can switch by
changing an import. ``log()`` gates (``log_freq``, ``log_on_workers``), normalizes
the item for its kind, and hands a tuple to the run's pipeline; it does no I/O, except that
an artifact is captured (hard-linked or copied into the run) at the call. What a started
run holds (steps, epoch, errors, the pipeline) lives in one :class:`fanlog.run.Run`,
which a logger and the members of a collection share.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from typing import Any, ClassVar

from fanlog import aggregation, diagnostics, lifecycle, secrets
from fanlog import forking as _forking  # noqa: F401 - registers the fork hooks
from fanlog.backend import JOURNAL_ONLY_BIT, AllKinds, Backend
from fanlog.diagnostics import warn_once
from fanlog.errors import BackendError, LoggerNotStartedError
from fanlog.journal import Pending
from fanlog.kinds.registry import _REGISTRY, Kind, get_kind
from fanlog.options import BackendContext
from fanlog.pipeline import PipelineSettings
from fanlog.rank import check_run_id, detect_rank, detect_world_size, run_id_for_job
from fanlog.record import RunInfo, RunStatus
from fanlog.run import Run, Sink
from fanlog.validate import INT64_MAX, check_index

log = logging.getLogger(__name__)

LogFreq = int | str
Workers = int | list[int]
UNSUPPORTED_POLICIES = ("warn", "raise", "ignore", "journal")
PICKLE_FLUSH_TIMEOUT = 30.0
"""Seconds pickling a started logger (a spawn) waits for its records to reach the trackers."""
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
        raise TypeError(f"unknown logger option(s) {sorted(unknown)}; pipeline options are {sorted(names)}")
    return PipelineSettings(**options)


class _KindGate:
    """Which members take a kind: built once per kind, so log() only checks log_freq.

    ``members`` holds (bit, every) where every is 1 for 'batch', n for an int log_freq and
    0 for 'epoch' (never with a batch_idx). ``every`` is their common value when they all
    agree (the usual case: one test instead of a loop), else 0. ``normalize`` is the kind's
    normalizer, for artifacts followed by the capture into the run. ``name`` is the kind's
    name, which the record carries (a plain str: see :mod:`fanlog.journal.rows`).
    """

    __slots__ = ("kind", "name", "normalize", "all_bits", "members", "every")

    def __init__(
        self,
        kind: Kind | None,
        all_bits: int,
        members: list[tuple[int, int]],
        normalize: Callable[[Any, str], Any],
    ) -> None:
        """`kind` None: a gate that lets nothing through (a kind a compat logger skips)."""
        self.kind = kind
        self.name = kind.name if kind is not None else ""
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
        # names reach the journal, every tracker and their servers' logs: no secret in them
        self.experiment_name = _scrubbed(experiment_name)
        self.run_name = _scrubbed(run_name)
        self.job_id = check_run_id(job_id) if job_id else None  # "" means: not given
        self.name = name
        self.settings = _settings_from(pipeline)
        self.rank: int | None = None
        self._run: Run | None = None
        """The run this logger writes to (shared with the collection it belongs to); kept once
        the run is closed, so that its info and errors stay readable."""
        self._gates: dict[str, _KindGate] = {}
        """Per kind, the gate built by the first call; the run empties it when it closes."""
        self._started_in: int | None = None

    # ------------------------------------------------------------------ itwinai names
    @property
    def worker_rank(self) -> int:
        return self.rank if self.rank is not None else detect_rank()

    @property
    def is_active(self) -> bool:
        return self._live() is not None

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
        """itwinai's rule: never on a rank `log_on_workers` leaves out; else without batch_idx
        always, with it by log_freq. The rank is the one the run was started with, else the
        launcher's. User code calls it to skip work (a figure) that no tracker would get."""
        if not rank_logs(self.log_on_workers, self.worker_rank):
            return False
        mode, every = self._freq
        if batch_idx is None or mode == _BATCH:
            return True
        return mode == _EVERY and batch_idx % every == 0

    # ------------------------------------------------------------------ the run
    @property
    def run_info(self) -> RunInfo | None:
        """The run's id, name, rank, world size and directory (None before the first start)."""
        return self._run.info if self._run is not None else None

    @property
    def journal_path(self) -> str | None:
        """The journal this logger's run writes (None before the first start)."""
        return self._run.journal_path if self._run is not None else None

    @property
    def _pipeline(self) -> Sink | None:
        """The live run's pipeline, or None (for tools and tests that look inside)."""
        run = self._live()
        return run.pipeline if run is not None else None

    @property
    def _bit(self) -> int:
        """This member's mask bit in the live run (0: no tracker on this rank, or not started)."""
        run = self._live()
        return run.bits.get(self, 0) if run is not None else 0

    def _live(self) -> Run | None:
        """The run, while it is live."""
        run = self._run
        return run if run is not None and run.status is None else None

    # ------------------------------------------------------------------ lifecycle
    def create_logger_context(self, rank: int | None = None, **options: Any) -> Logger:
        """Start the run: open the journal and the background workers. Returns self.

        Keyword options fanlog does not use itself (itwinai's trainer passes ``run_id=``,
        ``parent_run_id=``, ``run_name=``) are offered to the backends of this rank
        (:meth:`fanlog.backend.Backend.context_options`); those none takes are logged at
        debug level.
        """
        if self.is_active:
            warnings.warn(
                f"{type(self).__name__}.create_logger_context() called twice; ignored",
                RuntimeWarning,
                stacklevel=2,
            )
            return self
        self.rank = detect_rank(rank)
        info = self._run_info(run_id_for_job(self.job_id))
        _check_writable(self.savedir)
        members = self._make_backends(options, info)
        run: Run | None = None
        try:
            with lifecycle.starting():  # a Ctrl-C is raised once the run is whole
                run = Run.open(info, members, self.settings, strict=self.strict, log=self.log)
                self._attach(run)
                lifecycle.register(run)
        except BaseException as exc:
            if run is not None:  # interrupted (Ctrl-C, a handler that raised): close what started
                run.destroy(lifecycle.exit_status(exc))
            else:  # the members' own resources (e.g. a run the compat MLflow logger started)
                _closed(members, RunStatus.FAILED)
            raise
        self._started_in = None
        return self

    def destroy_logger_context(self, status: RunStatus | str = RunStatus.FINISHED) -> bool:
        """Flush, close every backend with `status`, and report backend errors.

        Returns True if every record reached every backend.
        """
        run = self._live()
        if run is None:
            return True
        complete = run.destroy(status)
        error = run.take_strict_error()
        if run.strict and error is not None:
            raise BackendError(str(error)) from error
        return complete

    @contextlib.contextmanager
    def start_logging(self, rank: int | None = None) -> Iterator[Logger]:
        """Context manager: create, yield, destroy. The run ends failed on an exception or a
        ``sys.exit()`` other than 0 or None, killed on Ctrl-C (or an exit a SIGTERM handler
        of the user's raised), finished otherwise (see :func:`fanlog.lifecycle.exit_status`)."""
        self.create_logger_context(rank=rank)
        try:
            yield self
        except BaseException as exc:
            self.destroy_logger_context(lifecycle.exit_status(exc))
            raise
        self.destroy_logger_context(RunStatus.FINISHED)

    def flush(self, timeout: float | None = None) -> bool:
        """Return once everything logged so far is in the journal and in every healthy backend."""
        run = self._live()
        if run is None:
            return True
        lifecycle.install_signal_handlers()  # a no-op unless on the main thread, the first time
        done = run.flush(timeout)
        run.attend(stacklevel=2)
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
            self._live_run("log")
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
            identifier = _plain_identifier(identifier, gate.kind)  # type: ignore[arg-type]
        if step is not None and (type(step) is not int or not 0 <= step <= INT64_MAX):
            step = check_index(step, "step", identifier)
        value = gate.normalize(item, identifier)
        run: Run = self._run  # type: ignore[assignment]  # a gate exists only while a run does
        if step is None:  # next() of a per-key itertools.count: unique even across threads
            step = next(run.counters.get(identifier) or run.counter(identifier))
        else:
            run.steps[identifier] = step + 1
            if run.counters:  # a given step moves the key's automatic count
                run.counters.pop(identifier, None)
        options = _options(kwargs, kind, identifier) if kwargs else None
        record: Pending = (  # type: ignore[assignment]  # a plain tuple, for speed (see Pending)
            gate.name,
            identifier,
            value,
            step,
            batch_idx,
            run.epoch,
            time.time(),
            mask,
            options,
        )
        if run.attention:  # a warning or a strict error waits, or the run was closed
            self._submit_and_attend(run, record)
        else:
            run.pipeline.submit(record)

    def log_metrics(
        self,
        metrics: Mapping[str, Any],
        step: int | None = None,
        batch_idx: int | None = None,
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
        self._live_run("end_epoch").end_epoch(self.log)

    @property
    def epoch(self) -> int:
        run = self._live()
        return run.epoch if run is not None else 0

    @property
    def dropped(self) -> int:
        """Records dropped because the journal writer fell `max_pending` behind."""
        pipeline = self._pipeline
        return pipeline.dropped if pipeline is not None else 0

    @property
    def unstored(self) -> int:
        """Records that could not be stored (set aside in the journal's ``unstored`` table)."""
        pipeline = self._pipeline
        return pipeline.unstored if pipeline is not None else 0

    def delivery_errors(self) -> dict[str, list[str]]:
        """Errors each backend raised so far (lenient mode records them instead of raising)."""
        errors = self._run.errors if self._run is not None else {}
        return {name: list(found) for name, found in errors.items()}

    # ------------------------------------------------------------------ starting, step by step
    def _run_info(self, run_id: str) -> RunInfo:
        """Who and where this process is in the run `run_id` (its rank directory)."""
        assert self.rank is not None
        return RunInfo(
            run_id=run_id,
            run_name=self.run_name or run_id,
            rank=self.rank,
            world_size=detect_world_size(),
            run_dir=os.path.abspath(os.path.join(self.savedir, "runs", run_id, f"rank-{self.rank}")),
            experiment_name=self.experiment_name,
        )

    def _make_backends(
        self, options: Mapping[str, Any], info: RunInfo
    ) -> list[tuple[TrackerLogger, str, Backend]]:
        """(member, name, backend) for each member that logs on this rank: a fresh backend,
        offered `options` (every member first, so that what one starts on the caller's thread,
        such as an MLflow run, is there when the others prepare), then prepared on the
        caller's thread (a missing library fails here)."""
        assert self.rank is not None
        made: list[tuple[TrackerLogger, str, Backend]] = []
        taken: set[str] = set()
        honoured: set[str] = set()
        try:
            for member in self.members():
                member.rank = self.rank
                member.backend = None
                if not rank_logs(member.log_on_workers, self.rank):
                    continue
                backend = member.make_backend()
                made.append((member, _unique(member.name or backend.name, taken), backend))
                honoured.update(member.start_context(backend, options, info))
            for member, _, backend in made:
                backend.prepare()
                member.backend = backend
        except BaseException:
            _closed(made, RunStatus.FAILED)
            raise
        ignored = sorted(set(options) - honoured)
        if ignored:
            message = "%s.create_logger_context(): no backend on rank %d takes the option(s) %s"
            log.debug(message, type(self).__name__, self.rank, ignored)
        return made

    def _attach(self, run: Run) -> None:
        """Point this logger and its members at `run`; their gates are rebuilt on first use."""
        for logger in (self, *self.members()):
            logger._run = run
            logger._gates.clear()
            run.forget_on_close(logger._gates)

    # ------------------------------------------------------------------ internals
    def _gate(self, kind: str) -> _KindGate:
        """Build (once) the gate of `kind`: which members take it, with which log_freq."""
        run = self._live_run("log")
        kind_obj = _REGISTRY.get(kind) or get_kind(kind)
        all_bits = 0
        members: list[tuple[int, int]] = []
        refused: list[str] = []
        for member in self.members():
            bit = run.bits.get(member, 0)
            if not bit:
                continue
            if kind not in member.backend_class.supported_kinds:
                # A kind the logger declares but its tracker does not store (compat.itwinai's)
                # is kept in the journal only, as unsupported="journal" does for any kind.
                if kind in member.supported_kinds or self.unsupported == "journal":
                    bit = JOURNAL_ONLY_BIT
                else:
                    refused.append(type(member).__name__)
                    continue
            all_bits |= bit
            mode, every = member._freq
            members.append((bit, 1 if mode == _BATCH else every))
        if refused and self.unsupported == "raise":  # not cached: raised on every call
            raise ValueError(f"{refused[0]} does not support kind {kind!r} (unsupported='raise')")
        implied = refused and diagnostics.implied()
        if self.unsupported == "warn":
            for name in refused:
                message = f"{name} does not support kind {kind!r}; those records are skipped for it"
                if implied:  # an integration's record, not the user's call: said once, quietly
                    if (name, kind, "debug") not in run.warned:
                        run.warned.add((name, kind, "debug"))
                        log.debug("%s (this run)", message)
                else:
                    warn_once(message, UserWarning, key=(name, kind), seen=run.warned, stacklevel=3)
        normalize = kind_obj.normalize
        if kind_obj.storage == "file":  # artifacts enter the run now, on the caller's thread
            normalize = functools.partial(_capture_artifact, kind_obj, run)
        gate = _KindGate(kind_obj, all_bits, members, normalize)
        if not implied:  # else the user's own first call of this kind still warns
            self._gates[kind] = gate
        return gate

    def _live_run(self, call: str) -> Run:
        """The run, if it is live; else the error that says why `call` cannot be made."""
        run = self._live()
        if run is None:
            raise self._not_started(call)
        return run

    def _submit_and_attend(self, run: Run, record: Pending) -> None:
        """log()'s slow end: refuse a closed run, else submit, then warn what background threads
        queued and raise a strict-mode error."""
        if run.status is not None:
            raise self._not_started("log")
        run.pipeline.submit(record)
        run.attend(stacklevel=3)

    def __getstate__(self) -> dict[str, Any]:
        """A logger reaches another process (spawn, pickle) unstarted: the live run stays here.

        A started logger keeps its run id, so that the other process, once it calls
        create_logger_context(), joins the same run (in a journal of its own).
        """
        state = self.__dict__.copy()
        run = self._live()
        if run is not None:
            # What the run holds reaches the trackers first: the other process may attach to
            # the same tracker run (MLflow finds rank 0's), which must exist by then.
            run.flush(PICKLE_FLUSH_TIMEOUT)
            state["job_id"] = self.job_id or run.info.run_id
            state["_started_in"] = os.getpid()
        state.update(_run=None, _gates={})
        if "backend" in state:
            state["backend"] = None
        return state

    def _not_started(self, call: str) -> LoggerNotStartedError:
        closed = self._run is not None
        when = "after destroy_logger_context()" if closed else "before create_logger_context()"
        started_in = getattr(self, "_started_in", None)
        if started_in is not None and not closed:
            when += (
                f" in this process (it was started in process {started_in} and reached this"
                " one unstarted; call create_logger_context() here)"
            )
        return LoggerNotStartedError(f"{type(self).__name__}.{call}() called {when}")


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
        return BackendContext(
            os.fspath(self.savedir), self.experiment_name, self.run_name, self.log_on_workers
        )

    def make_backend(self) -> Backend:
        """A fresh backend for one run, built from this logger's declaration."""
        return self.backend_class(self.options, self.backend_context())

    def start_context(self, backend: Backend, options: Mapping[str, Any], info: RunInfo) -> Sequence[str]:
        """On the caller's thread, when a run of this rank starts: offer the unknown options
        of ``create_logger_context()`` to `backend` (see ``Backend.context_options``) and return
        the names it honours. A shell that must act on the caller's thread before the run
        (compat.itwinai's MLflow starts the MLflow run there) overrides it."""
        return backend.context_options(**options) if options else ()

    def run_closed(self, status: RunStatus) -> None:
        """Called once the run this member wrote to is closed, on the thread that closed it
        (also when the run failed to start). Default: nothing."""


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
        self._warn_about_members()

    def members(self) -> list[TrackerLogger]:
        """The tracker loggers of this collection and of nested ones, each once."""
        found: dict[int, TrackerLogger] = {}
        for logger in self.loggers:
            for member in logger.members():
                found.setdefault(id(member), member)
        return list(found.values())

    def _warn_about_members(self) -> None:
        """Say what would otherwise surprise silently: a logger listed twice (it logs once),
        and a journal member whose own savedir is not where the collection's journal is."""
        seen: set[int] = set()
        for logger in self.loggers:
            for member in logger.members():
                if id(member) in seen:
                    named = f" {member.name!r}" if member.name else ""
                    warnings.warn(
                        f"fanlog: {type(member).__name__}{named} is listed more than once "
                        "in this LoggersCollection; it logs once",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                seen.add(id(member))
        for member in self.members():
            journal_only = not member.backend_class.needs_delivery
            own = os.path.abspath(member.savedir)
            if journal_only and member.savedir != "mllogs" and own != os.path.abspath(self.savedir):
                warnings.warn(
                    f"fanlog: {type(member).__name__}(savedir={member.savedir!r}) is a member "
                    "of a LoggersCollection: it records into the collection's journal in "
                    f"{self.savedir!r}; nothing is written to {member.savedir!r}",
                    RuntimeWarning,
                    stacklevel=3,
                )

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

    def log(
        self,
        item: Any,
        identifier: str,
        kind: str = "metric",
        step: int | None = None,
        batch_idx: int | None = None,
        **kwargs: Any,
    ) -> None:
        return None


def _closed(members: Sequence[tuple[TrackerLogger, str, Backend]], status: RunStatus) -> None:
    """Tell members whose run did not start that it is over."""
    for member, _, _ in members:
        try:
            member.run_closed(status)
        except Exception:  # noqa: BLE001 - the failure being raised matters more
            log.debug("%s.run_closed() failed", type(member).__name__, exc_info=True)


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}#{n}"
    taken.add(candidate)
    return candidate


def _plain_identifier(identifier: Any, kind: Kind) -> str:
    """A str subclass (StrEnum, numpy.str_) as a plain str; None as the kind's default key
    where it has one (``log(None, None, kind="system")``); anything else is refused."""
    if isinstance(identifier, str) and identifier:
        return str.__str__(identifier)
    if identifier is None and kind.default_key:
        return kind.default_key
    raise ValueError(f"log(kind={kind.name!r}): identifier must be a non-empty str; got {identifier!r}")


def _options(options: dict[str, Any], kind: str, identifier: str) -> str | dict[str, Any]:
    """The keyword options of a log() call, redacted and encoded as JSON now, as they were at
    the call (they reach the journal and the trackers). Options JSON cannot hold stay a dict:
    the writer sets that record aside in ``unstored`` with the reason, and reports it."""
    try:
        redacted = secrets.redact_options(options)
    except ValueError as exc:  # a structure that contains itself
        raise ValueError(
            f"log(kind={kind!r}, identifier={identifier!r}): expected keyword options without "
            f"circular references ({exc})"
        ) from None
    try:
        return json.dumps(redacted, default=str)
    except Exception:  # noqa: BLE001 - a user object's __str__ may raise anything
        return redacted


def _capture_artifact(kind: Kind, run: Run, item: Any, identifier: str) -> Any:
    """The artifact kind's check, then its capture into the run (a link or a copy)."""
    return run.capture(kind.normalize(item, identifier), identifier)


def _check_writable(savedir: str) -> None:
    try:
        os.makedirs(savedir, mode=0o700, exist_ok=True)
    except OSError as exc:
        blocking = _file_in_the_way(savedir)
        why = f"{blocking!r} is a file, not a directory" if blocking else exc.strerror
        raise OSError(f"fanlog: cannot create the save dir {savedir!r}: {why}") from exc
    if not os.access(savedir, os.W_OK | os.X_OK):
        raise PermissionError(f"fanlog: the save dir {savedir!r} is not writable")


def _scrubbed(name: Any) -> Any:
    """A run or experiment name without secrets (it reaches every tracker and its logs)."""
    return secrets.scrub_text(name) if isinstance(name, str) else name


def _file_in_the_way(path: str) -> str | None:
    """The first existing non-directory on the way to `path` (itself included), if any."""
    here = os.path.abspath(path)
    parts = []
    while True:
        parts.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    for candidate in reversed(parts):
        if os.path.lexists(candidate) and not os.path.isdir(candidate):
            return candidate
    return None
