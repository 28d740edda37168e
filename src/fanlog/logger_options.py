"""The options every logger has (:class:`LoggerOptions`), and a tracker logger's options:
those plus its tracker's :class:`~fanlog.options.BackendOptions`, as one pydantic model.

:class:`fanlog.logger.TrackerLogger` builds its constructor's signature and checks its
arguments with :func:`tracker_model`; configuration files use :func:`options_model`,
which also reads the signature of a hand-written logger class.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from fanlog.logger import UNSUPPORTED_POLICIES, Logger, TrackerLogger
from fanlog.options import BackendOptions, check
from fanlog.pipeline import PipelineSettings

_CONFIG = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
_DEFAULTS = {n: p.default for n, p in inspect.signature(Logger.__init__).parameters.items()}
"""The defaults of the common options are Logger's own: written once, there."""


class _LoggerOptions(BaseModel):
    """Options of every logger (itself, or a member of a collection)."""

    model_config = _CONFIG

    savedir: str | os.PathLike[str] = Field(
        _DEFAULTS["savedir"], description="where the journal (and file-based trackers) write"
    )
    log_freq: int | str = Field(
        _DEFAULTS["log_freq"],
        description="'batch' (every call), 'epoch' (only calls without "
        "batch_idx) or an int n (calls whose batch_idx % n == 0, and calls without batch_idx)",
    )
    log_on_workers: int | list[int] | tuple[int, ...] = Field(
        _DEFAULTS["log_on_workers"], description="the rank that logs, -1 for every rank, or a list of ranks"
    )
    experiment_name: str | None = Field(
        _DEFAULTS["experiment_name"], description="the experiment (or project) the run belongs to"
    )
    run_name: str | None = Field(
        _DEFAULTS["run_name"], description="the run's name in trackers that show one"
    )
    job_id: str | None = Field(
        _DEFAULTS["job_id"],
        description="the run id every rank shares (default: the launcher's job id, else a new one)",
    )
    unsupported: Literal[UNSUPPORTED_POLICIES] = Field(  # type: ignore[valid-type]
        _DEFAULTS["unsupported"],
        description="a kind a tracker does not store: 'warn' once per "
        "(tracker, kind), 'raise', 'ignore', or 'journal' (kept in the journal, silently)",
    )
    strict: bool = Field(
        _DEFAULTS["strict"],
        description="raise a tracker's errors (at the next call) instead of only recording them",
    )
    name: str | None = Field(
        _DEFAULTS["name"],
        description="this tracker's name in the journal (default: the "
        "tracker's, e.g. 'mlflow'; give one to tell two of a kind apart)",
    )


def _pipeline_fields() -> dict[str, Any]:
    """The fields of :class:`fanlog.pipeline.PipelineSettings`, read from the dataclass."""
    hints = typing.get_type_hints(PipelineSettings)
    found: dict[str, Any] = {}
    for field in dataclasses.fields(PipelineSettings):
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = ...
        description = field.metadata.get("description") or field.metadata.get("doc")
        found[field.name] = (hints[field.name], Field(default, description=description))
    return found


LoggerOptions: type[BaseModel] = create_model(
    "LoggerOptions", __base__=_LoggerOptions, __doc__=_LoggerOptions.__doc__, **_pipeline_fields()
)
"""Every option a logger has: its own, then the :class:`~fanlog.pipeline.PipelineSettings`."""


@functools.cache
def tracker_model(logger_cls: type[TrackerLogger]) -> type[BaseModel]:
    """The options of a tracker logger: the common ones (with the tracker's own defaults,
    less those it spells its own way), then its tracker's."""
    own: type[BackendOptions] = logger_cls.backend_class.Options
    fields: dict[str, Any] = {}
    for name, field in LoggerOptions.model_fields.items():
        if name in own.sets_common:
            continue
        if name in own.common_defaults:
            field = FieldInfo.merge_field_infos(field, default=own.common_defaults[name])
        fields[name] = (field.annotation, field)
    tracker: dict[str, Any] = {}
    for name, field in own.model_fields.items():
        if name in fields:
            raise TypeError(
                f"{own.__qualname__}.{name} repeats the common option {name!r}; "
                "give the tracker's default in common_defaults instead"
            )
        tracker[name] = (field.annotation, field)
    savedir = fields.pop("savedir")  # the one positional option, then the tracker's own
    ordered = {"savedir": savedir, **tracker, **fields}
    return create_model(f"{logger_cls.__name__}Options", __config__=_CONFIG, **ordered)


def split(
    logger_cls: type[TrackerLogger], values: Mapping[str, Any]
) -> tuple[dict[str, Any], BackendOptions]:
    """`values` checked as a whole (an unknown or ill-typed option names the accepted ones),
    then split into the keywords of ``Logger.__init__`` and the tracker's options."""
    checked = check(tracker_model(logger_cls), values, logger_cls.__name__)
    own_cls = logger_cls.backend_class.Options
    own = own_cls.model_validate({k: v for k, v in values.items() if k in own_cls.model_fields})
    common = {n: getattr(checked, n) for n in LoggerOptions.model_fields if n not in own_cls.sets_common}
    for name, source in own_cls.sets_common.items():
        common[name] = getattr(own, source)
    return common, own


def shell_signature(logger_cls: type[TrackerLogger]) -> inspect.Signature:
    """``(self, savedir=..., *, option=default, ...)``: what help() and the docs show."""
    Parameter = inspect.Parameter
    parameters = [Parameter("self", Parameter.POSITIONAL_OR_KEYWORD)]
    for name, field in tracker_model(logger_cls).model_fields.items():
        kind = Parameter.POSITIONAL_OR_KEYWORD if name == "savedir" else Parameter.KEYWORD_ONLY
        default = Parameter.empty if field.is_required() else field.get_default(call_default_factory=True)
        parameters.append(Parameter(name, kind, default=default, annotation=field.annotation))
    return inspect.Signature(parameters)


_PIPELINE_FIELD = "a :class:`fanlog.pipeline.PipelineSettings` field"


def shell_doc(logger_cls: type[TrackerLogger]) -> str:
    """An ``Args:`` section made from the field descriptions."""
    model = tracker_model(logger_cls).model_fields
    lines = [f"Build a {logger_cls.__name__}; every option but `savedir` is a keyword.", "", "Args:"]
    for name, field in model.items():
        lines.append(f"    {name}: {field.description or _PIPELINE_FIELD}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- any logger class
_PLAIN = (bool, int, float, str, type(None), list, tuple, dict, Mapping, Sequence, os.PathLike)


@functools.cache
def options_model(cls: type) -> type[BaseModel]:
    """The options a Logger class accepts, as a pydantic model: a tracker logger's
    declaration, else the parameters of its ``__init__`` and, through ``**kwargs``, those of
    the class it hands them to (ending at a tracker logger or at :class:`Logger`)."""
    fields: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if getattr(init, "__fanlog_shell__", False) or klass is TrackerLogger:
            _add(fields, tracker_model(cls).model_fields)
            break
        if klass is Logger:
            _add(fields, LoggerOptions.model_fields)
            break
        forwards = _add_parameters(fields, init)
        if not forwards:
            break
    return create_model(f"{cls.__name__}Options", __config__=_CONFIG, **fields)


def _add(fields: dict[str, Any], more: Mapping[str, FieldInfo]) -> None:
    for name, field in more.items():
        fields.setdefault(name, (field.annotation, field))


def _add_parameters(fields: dict[str, Any], init: Any) -> bool:
    """Add `init`'s named parameters; True if it takes ``**kwargs`` (and hands them on)."""
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - an annotation that does not evaluate: accept any value
        hints = {}
    forwards = False
    for name, param in inspect.signature(init).parameters.items():
        if param.kind is param.VAR_KEYWORD:
            forwards = True
        elif name != "self" and param.kind is not param.VAR_POSITIONAL and name not in fields:
            default = ... if param.default is param.empty else param.default
            fields[name] = (_plain(hints.get(name, Any)), Field(default))
    return forwards


def _plain(annotation: Any) -> Any:
    """`annotation` if a config value can be checked against it (JSON types, lists, mappings,
    paths), else Any: a class a YAML file cannot spell is checked by the constructor."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = typing.get_args(annotation)
        return annotation if all(_plain(p) is p for p in parts) else Any
    if origin is Literal:
        return annotation
    if origin is not None:
        return (
            annotation
            if origin in _PLAIN and all(a is Any or _plain(a) is a for a in typing.get_args(annotation))
            else Any
        )
    return annotation if annotation in _PLAIN else Any
