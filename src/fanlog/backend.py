"""The contract every tracker implements, and the registry of trackers by name.

A backend never sees the gate, the queue or the journal. It runs on its own background
thread (a dispatcher), receives records read back from the journal (so live delivery and
``fanlog sync`` are the same code path), and may raise: the dispatcher retries with
backoff and never drops what the backend did not accept. Every hook has a working
default, so a small tracker is an :class:`~fanlog.options.BackendOptions` model, a
``writers`` table and the methods it names. docs/writing-a-backend.md states the contract
in full (which hook runs when, on which thread, and what it may raise).

A tracker is one file: its options, its backend and a two-line
:class:`fanlog.logger.TrackerLogger` shell. Built-in trackers are listed in
:data:`fanlog.backends.BUILTIN`; others arrive with :func:`register_backend` or an entry
point in the ``fanlog.backends`` group, and every name is found by :func:`logger_type`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import stat
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from fanlog.errors import PartialDelivery, RecordRejected, Verdict, classify
from fanlog.options import BackendContext, BackendOptions, check, did_you_mean, jsonable
from fanlog.record import Record, RunInfo, RunStatus
from fanlog.secrets import redact

if TYPE_CHECKING:
    from fanlog.logger import Logger

B = TypeVar("B", bound="Backend")

ENTRY_POINT_GROUP = "fanlog.backends"
"""Packages declare their trackers here: ``[project.entry-points."fanlog.backends"]``."""

JOURNAL_ONLY_BIT = 1 << 62
"""The mask bit of a record kept in the journal for no tracker (``unsupported="journal"``).
A journal holds at most 62 backends (bits 0-61), so no dispatcher ever reads this bit."""


class AllKinds(frozenset):
    """A `supported_kinds` that contains every kind, including ones registered later."""

    def __contains__(self, item: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "AllKinds()"


class Backend:
    """One tracker: options declared once, the kinds it stores as a table, and hooks that
    all have a working default. See docs/writing-a-backend.md for the whole contract."""

    name: ClassVar[str] = "backend"
    """The registered name: in the journal's delivery table and ``fanlog sync --to``."""
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    """The tracker's options, declared once (fields, types, defaults, descriptions)."""
    writers: ClassVar[Mapping[str, str]] = {}
    """kind → name of the method that stores one record of that kind, ``method(record)``."""
    supported_kinds: ClassVar[frozenset[str]] = frozenset()
    """Derived from `writers` (set it only in a backend that overrides `write` without one)."""
    max_batch: ClassVar[int] = 1000
    """Most records handed to one `write` call."""
    needs_delivery: ClassVar[bool] = True
    """False for a backend whose store is the journal itself: it gets no dispatcher, and
    `fanlog show` counts its records as delivered."""
    runs_in_agent: ClassVar[bool] = True
    """False for a backend that must write from the training process itself (the console
    display shares the user's terminal): it keeps a dispatcher thread there while the other
    trackers are delivered by the delivery agent (see docs/concepts.md)."""

    options: BackendOptions
    context: BackendContext
    remote: bool = False
    """True in the training process when the delivery agent delivers this backend: this
    object is never opened there; a copy built from its declaration does the work."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "writers" not in cls.__dict__:
            return
        if "supported_kinds" in cls.__dict__:
            raise TypeError(f"{cls.__qualname__}: declare `writers`; supported_kinds is derived from it")
        missing = [m for m in cls.writers.values() if not callable(getattr(cls, m, None))]
        if missing:
            raise TypeError(f"{cls.__qualname__}.writers names methods it does not have: {missing}")
        cls.supported_kinds = frozenset(cls.writers)

    def __init__(
        self,
        options: BackendOptions | None = None,
        context: BackendContext | None = None,
        **values: Any,
    ) -> None:
        """Build from validated `options` and a `context`, or from plain keyword `values`
        (tracker options and context fields: ``MLflowBackend(tracking_uri=..., savedir=...)``)."""
        if values:
            if options is not None or context is not None:
                raise TypeError(f"{type(self).__name__}(): give options and context, or keywords")
            options, context = self.split(values)
        self.options = options if options is not None else self.Options()
        self.context = (context or BackendContext()).with_defaults(self.Options.common_defaults)

    @classmethod
    def from_options(
        cls: type[B], options: Mapping[str, Any] | None = None, context: BackendContext | None = None
    ) -> B:
        """A backend built from a plain mapping (``fanlog sync -o key=value``, a config file,
        a process that rebuilds it from :meth:`spec`). Context fields in `options`
        (``savedir``, ``experiment_name``, ...) replace those of `context`."""
        own, found = cls.split(dict(options or {}), context)
        return cls(own, found)

    @classmethod
    def split(
        cls, values: Mapping[str, Any], context: BackendContext | None = None
    ) -> tuple[BackendOptions, BackendContext]:
        """`values` as (validated options, context); an unknown option is a TypeError that
        names the closest accepted one, a wrong value a ValueError."""
        common = [n for n in BackendContext.field_names() if n not in cls.Options.sets_common]
        own = {k: v for k, v in values.items() if k not in common}
        given = {k: v for k, v in values.items() if k in common}
        if "savedir" in given:
            given["savedir"] = os.fspath(given["savedir"])
        context = dataclasses.replace(context or BackendContext(), **given)
        options = check(cls.Options, own, f"{cls.__name__} options")
        assert isinstance(options, BackendOptions)
        return options, context

    def spec(self) -> dict[str, Any]:
        """This backend's declaration as JSON-able data (secrets redacted): its registered
        `type`, its class, its options and context, and the options that cannot be written
        as JSON (a credential object), which a rebuild must supply again."""
        values = {name: getattr(self.options, name) for name in type(self.options).model_fields}
        options = {k: v for k, v in values.items() if jsonable(v)}
        return {
            "type": self.name,
            "class": f"{type(self).__module__}:{type(self).__qualname__}",
            "options": redact(options),
            "context": redact(dataclasses.asdict(self.context)),
            "unserialisable": sorted(set(values) - set(options)),
            "needs_delivery": self.needs_delivery,
        }

    # ------------------------------------------------------------ caller's thread
    def prepare(self) -> None:
        """Called once at ``create_logger_context``, on the caller's thread, before the run
        starts: check that the tracker library is installed (:func:`require_tracker`, which
        does not import it), read what is thread-local (an active run). No network, and no
        import of the tracker: with the delivery agent the tracker never enters the training
        process. Raising here fails ``create_logger_context`` (a missing extra, bad options).
        Default: nothing."""

    def handoff(self) -> dict[str, Any]:
        """What :meth:`prepare` settled on the caller's thread that a copy of this backend in
        the delivery agent needs (JSON-able; a tracking URI, the id of a run the user has
        active). Default: nothing."""
        return {}

    def take_handoff(self, state: Mapping[str, Any]) -> None:
        """In the delivery agent, instead of :meth:`prepare`: take over `state`, what
        :meth:`handoff` returned in the training process. Default: call :meth:`prepare`."""
        self.prepare()

    def info(self) -> dict[str, Any]:
        """What the user may read in the training process once the run is open (MLflow's run
        id), JSON-able. The delivery agent writes it to the journal's ``health`` table and
        hands it to :meth:`take_info` there. Default: nothing."""
        return {}

    def take_info(self, info: Mapping[str, Any]) -> None:
        """In the training process, when the delivery agent has opened this backend: `info` is
        what :meth:`info` returned there. Default: nothing."""

    # ------------------------------------------------------------ dispatcher thread
    def open(self, run: RunInfo) -> None:
        """Start or attach to the tracker's run, on the dispatcher thread, before any write.
        Retried with backoff until it succeeds, so it must be idempotent: a second call
        after a failure must not start a second run. Default: nothing."""

    def write(self, records: Sequence[Record]) -> None:
        """Store a batch, in order. Default: each record through its `writers` entry.

        Raise on failure (the batch is retried); raise :class:`PartialDelivery` if only a
        prefix was stored; raise :class:`RecordRejected` (or call :meth:`reject`) for a
        record that can never be stored here."""
        done = 0
        try:
            for record in records:
                self.write_record(record)
                done += 1
        except Exception as exc:
            if done:
                raise PartialDelivery(done, exc) from exc
            raise

    def write_record(self, record: Record) -> Any:
        """Store one record with the method its kind is declared with in `writers`."""
        return getattr(self, self.writers[record.kind])(record)

    def flush(self) -> None:
        """Make what `write` accepted visible in the tracker. Default: nothing to do."""

    def close(self, status: RunStatus) -> None:
        """End the run with `status` (unless the run belongs to someone else) and release
        what `open` took. Called once, after the last write. Default: nothing."""

    def describe(self) -> str:
        """Where this backend writes, for messages (e.g. a tracking URI or directory)."""
        return self.name

    def context_options(self, **options: Any) -> Sequence[str]:
        """Offered the keyword options of ``create_logger_context()`` that fanlog itself does
        not use (itwinai's trainer passes ``run_id=``, ``parent_run_id=``, ``run_name=``):
        once per run, on the caller's thread, before :meth:`open`. Returns the names this
        backend honours; the core logs the others at debug level. Default: none."""
        return ()

    def classify(self, exc: BaseException) -> Verdict:
        """``"permanent"`` if `exc` means the record can never be stored here, else
        ``"transient"`` (retried with backoff). Default: :func:`fanlog.errors.classify`,
        which knows HTTP statuses and errno values but no tracker; override it for a
        tracker's own error codes."""
        return classify(exc)

    def reject(self, record: Record, reason: str) -> None:
        """Note that `record` can never be stored here, and go on with the batch: the
        dispatcher marks it in the journal once `write` returns (or raises past it)."""
        rejections = self.__dict__.setdefault("_rejections", [])
        rejections.append(RecordRejected(reason, record.seq))

    def take_rejections(self) -> list[RecordRejected]:
        """The rejections noted since the last call (the dispatcher collects them)."""
        return self.__dict__.pop("_rejections", [])

    def work_clock(self) -> float | None:
        """CPU seconds used so far by what does this backend's work outside the calling
        thread (a worker process), or None (default: nothing does). While it grows, a call
        in progress is busy, not stalled (see :class:`fanlog.delivery.CallWatch`)."""
        return None


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds a live process (and its waited-for children) used, from /proc; None where
    there is no /proc or the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def artifact_source(record: Record) -> str:
    """The file or directory an artifact record names, or :class:`RecordRejected` if it
    is gone or is not a regular file or directory (a FIFO would block the upload forever)."""
    path = str(record.value)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise RecordRejected(f"cannot read {path!r} ({exc.strerror})", record.seq) from exc
    if stat.S_ISDIR(mode):
        for folder, _, files in os.walk(path):
            for name in files:
                inner = os.path.join(folder, name)
                if not os.path.isfile(inner):
                    raise RecordRejected(f"{inner!r} is not a regular file", record.seq)
        return path
    if not stat.S_ISREG(mode):
        raise RecordRejected(
            f"{path!r} is not a regular file or a directory (a FIFO, socket or device)", record.seq
        )
    return path


def require_tracker(module: str, extra: str) -> None:
    """Check that a tracker library is installed, without importing it (an import of mlflow
    takes seconds); else fail with the pip command that installs it."""
    top = module.partition(".")[0]
    if importlib.util.find_spec(top) is None:
        raise ImportError(f"{top} is not installed; install it with: pip install 'fanlog[{extra}]'")


def import_tracker(module: str, extra: str) -> Any:
    """Import a tracker library, or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is not installed; install it with: pip install 'fanlog[{extra}]' ({exc})"
        ) from exc


def finite_histogram(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram`` of finite values, also when their range overflows a float64
    (e.g. -1e308 and 1e308): the bins are computed on values scaled into [-1, 1]."""
    scale = float(np.max(np.abs(values)))
    if not np.isfinite(float(values.max()) - float(values.min())):
        counts, edges = np.histogram(values / scale, bins=bins)
        return counts, edges * scale
    return np.histogram(values, bins=bins)


# ---------------------------------------------------------------------------- the registry
CORE_LOGGERS: dict[str, str] = {"empty": "fanlog.logger:EmptyLogger"}
"""Names of loggers that are no tracker (they are in configuration files too)."""
_REGISTERED: dict[str, str | type] = {}


def register_backend(name: str, logger: type | str, *, replace: bool = False) -> None:
    """Make `name` usable in config files (``type: name``), ``fanlog sync --to name`` and
    :func:`logger_type`: `logger` is a :class:`fanlog.logger.TrackerLogger` subclass, or its
    ``"package.module:Class"`` path (imported on first use). A name already known is an
    error unless `replace`. Packages can instead declare an entry point in the
    ``fanlog.backends`` group, found without importing the package beforehand."""
    from fanlog import backends

    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"a backend name must be a non-empty str without ':'; got {name!r}")
    if not isinstance(logger, (str, type)):
        raise TypeError(
            f"register_backend({name!r}, ...) expects a Logger class or a 'module:Class' path; got {logger!r}"
        )
    known = name in _REGISTERED or name in backends.BUILTIN or name in CORE_LOGGERS
    if known and not replace:
        raise ValueError(f"backend {name!r} is already registered (pass replace=True to replace it)")
    _REGISTERED[name] = logger


def _entry_points() -> dict[str, Any]:
    """The ``fanlog.backends`` entry points of installed packages (read each time: a package
    installed while the process runs is found too)."""
    from importlib import metadata

    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def known_backends() -> list[str]:
    """Every name :func:`logger_type` resolves: registered, built in, and entry points."""
    from fanlog import backends

    return sorted({*_REGISTERED, *backends.BUILTIN, *CORE_LOGGERS, *_entry_points()})


def logger_type(name: str) -> type[Logger]:
    """The Logger class registered as `name` (or a dotted path ``package.module.Class``).

    Looked up in :func:`register_backend`'s table, then the built-in trackers, then the
    ``fanlog.backends`` entry points (read only when the name is not found before)."""
    from fanlog import backends
    from fanlog.logger import Logger

    target: str | type | None = _REGISTERED.get(name) or backends.BUILTIN.get(name) or CORE_LOGGERS.get(name)
    if target is None:
        entry = _entry_points().get(name)
        target = entry.value if entry is not None else None
    if target is None and "." in name:
        module, _, attr = name.rpartition(".")
        target = f"{module}:{attr}"
    if target is None:
        known = known_backends()
        raise ValueError(
            f"unknown backend {name!r}{did_you_mean(name, known)}; known backends: {', '.join(known)}"
        )
    found = _load(target) if isinstance(target, str) else target
    if not (isinstance(found, type) and issubclass(found, Logger)):
        raise TypeError(f"backend {name!r} names {found!r}, which is not a fanlog Logger class")
    return found


def backend_type(name: str) -> type[Backend]:
    """The Backend class of the tracker registered as `name`."""
    cls = logger_type(name)
    backend = getattr(cls, "backend_class", None)
    if backend is None:
        raise ValueError(f"{name!r} ({cls.__name__}) is not a tracker: it has no backend_class")
    return backend


logger_class = logger_type  # the former name


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    try:
        value: Any = importlib.import_module(module)
        for part in attr.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"cannot import {module}:{attr}: {exc}") from exc
    return value
