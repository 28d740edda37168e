"""Loggers from configuration: ``fanlog.from_config("fanlog.yaml")``, so trackers change without code.

A configuration is YAML (or a dict) in one of three shapes::

    type: mlflow                 # one backend: a registered name ...
    experiment_name: demo

    _target_: fanlog.backends.tensorboard.TensorBoardLogger   # ... or a dotted class path

    savedir: runs                # a collection: options of LoggersCollection, and
    loggers:                     # its members (a bare list is a collection too)
      - type: mlflow
      - {type: tensorboard, log_freq: batch}

``type`` is any name :func:`fanlog.backend.logger_type` knows: the built-in trackers, those
given to :func:`fanlog.register_backend` and those of installed packages' ``fanlog.backends``
entry points. ``_target_`` is the Hydra / itwinai / torchtune spelling; the prefixes in
:data:`fanlog.compat.TARGET_ALIASES` are rewritten first, so ``itwinai.loggers.X`` targets
build :mod:`fanlog.compat.itwinai` classes. Each entry is checked by pydantic against its
logger's declared options (:func:`fanlog.logger_options.options_model`); a wrong key,
value type or backend name is a :class:`ConfigError` that says what is accepted.
:func:`json_schema` is made from the same declarations.

Without an argument, :func:`from_config` reads the file named by ``FANLOG_CONFIG``.
``fanlog config [FILE] [--schema]`` checks a file or prints the schema.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, create_model
from pydantic.fields import FieldInfo

from fanlog.backend import known_backends, logger_type
from fanlog.errors import FanlogError
from fanlog.options import did_you_mean, problems_of
from fanlog.options import json_schema as options_schema

if TYPE_CHECKING:
    from fanlog.logger import Logger

CONFIG_ENV = "FANLOG_CONFIG"
TYPE_KEY = "type"
TARGET_KEY = "_target_"
MEMBERS_KEY = "loggers"
COLLECTION_FIXED = ("log_freq", "log_on_workers")
"""Options a collection does not take: each member gates itself with its own."""

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class ConfigError(FanlogError, ValueError):
    """A configuration that cannot build a logger; the message names the place and the fix."""


# ---------------------------------------------------------------------------- loading
def load_config(source: str | os.PathLike[str] | Mapping[str, Any] | Sequence[Any] | None = None) -> Any:
    """The configuration as plain data: a mapping or list as given, or a YAML file's content."""
    if source is None:
        source = os.environ.get(CONFIG_ENV)
        if not source:
            raise ConfigError(
                f"no configuration given and {CONFIG_ENV} is not set; pass a path or a dict, "
                f"or set {CONFIG_ENV}=path/to/fanlog.yaml"
            )
    if isinstance(source, (Mapping, list, tuple)):
        return source
    if not isinstance(source, (str, bytes, os.PathLike)):
        raise ConfigError(f"config: expected a path, a mapping or a list, got {type(source).__name__}")
    path = os.fsdecode(source)
    if not os.path.isfile(path):
        raise ConfigError(f"configuration file {path!r} does not exist")
    import yaml

    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, (Mapping, list)):
        raise ConfigError(f"{path}: expected a mapping or a list of loggers, got {type(data).__name__}")
    return data


def from_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | Sequence[Any] | None = None,
    **overrides: Any,
) -> Logger:
    """Build a logger (or a ``LoggersCollection``) from a YAML path, a dict or a list.

    `source` defaults to the file named by ``FANLOG_CONFIG``. `overrides` (e.g.
    ``savedir=args.savedir``) replace that option in every logger that accepts it; an
    override that no logger accepts is an error.
    """
    data = load_config(source)
    used: set[str] = set()
    logger = _Builder(overrides, used).top(data)
    unused = sorted(set(overrides) - used)
    if unused:
        raise ConfigError(f"override(s) {unused} are not an option of any configured logger")
    return logger


def validate(instance: Any, schema: Mapping[str, Any] | None = None) -> list[str]:
    """The problems of a configuration (plain data), as lines; empty when it is valid.

    Entries are checked against their loggers' declarations, as :func:`from_config` does,
    without building anything or importing ``_target_`` classes. `schema` is
    :func:`json_schema`'s output, made from the same declarations: it is not needed.
    """
    try:
        _Builder({}, set(), build=False).top(instance)
    except ConfigError as exc:
        return [f"config: matches none of the accepted forms; {exc}"]
    return []


class _Builder:
    """Walks a configuration: resolves each entry's class, checks its options, builds it."""

    def __init__(self, overrides: Mapping[str, Any], used: set[str], build: bool = True) -> None:
        self.overrides = overrides
        self.used = used
        self.build = build

    def top(self, data: Any) -> Any:
        if isinstance(data, (list, tuple)):
            return self.collection({MEMBERS_KEY: list(data)}, "config", None)
        if not isinstance(data, Mapping):
            raise ConfigError(f"config: expected a mapping or a list, got {type(data).__name__}")
        if TYPE_KEY in data or TARGET_KEY in data:
            return self.entry(data, "config")
        if MEMBERS_KEY in data:
            return self.collection(data, "config", None)
        raise ConfigError(
            f"config: expected a logger (with '{TYPE_KEY}' or '{TARGET_KEY}') or a collection (with "
            f"'{MEMBERS_KEY}'); got keys {sorted(map(str, data))}"
        )

    def entry(self, entry: Any, where: str) -> Any:
        if not isinstance(entry, Mapping) or (TYPE_KEY not in entry and TARGET_KEY not in entry):
            raise ConfigError(
                f"{where}: expected a mapping with '{TYPE_KEY}' or '{TARGET_KEY}', got {entry!r}"
            )
        if not self.build and TYPE_KEY not in entry:
            _target_path(entry, where)  # a class path is only checked when it is built
            return None
        cls = resolve(entry, where)
        if _is_collection(cls):
            return self.collection(entry, where, cls)
        label = f"{where} ({entry.get(TYPE_KEY) or entry.get(TARGET_KEY)})"
        options = {k: v for k, v in entry.items() if k not in (TYPE_KEY, TARGET_KEY)}
        model = _entry_model(cls)
        options.update(self.overrides_for(model))
        _check(options, model, label)
        return _construct(cls, label, **options) if self.build else None

    def collection(self, data: Mapping[str, Any], where: str, cls: type | None) -> Any:
        from fanlog.logger import LoggersCollection

        cls = cls or LoggersCollection
        members = data.get(MEMBERS_KEY)
        if not isinstance(members, (list, tuple)) or not members:
            raise ConfigError(f"{where}: '{MEMBERS_KEY}' must be a non-empty list of logger entries")
        loggers = [self.entry(m, f"{where}.{MEMBERS_KEY}[{i}]") for i, m in enumerate(members)]
        options = {k: v for k, v in data.items() if k not in (MEMBERS_KEY, TYPE_KEY, TARGET_KEY)}
        model = _collection_model(cls)
        options.update(self.overrides_for(model))
        _check(options, model, f"{where} ({cls.__name__})")
        return _construct(cls, where, loggers, **options) if self.build else None

    def overrides_for(self, model: type[BaseModel]) -> dict[str, Any]:
        chosen = {k: v for k, v in self.overrides.items() if k in model.model_fields}
        self.used.update(chosen)
        return chosen


def _is_collection(cls: type) -> bool:
    from fanlog.logger import LoggersCollection

    return isinstance(cls, type) and issubclass(cls, LoggersCollection)


def _construct(cls: type, where: str, *args: Any, **options: Any) -> Any:
    try:
        return cls(*args, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {cls.__name__}({', '.join(options)}) failed: {exc}") from exc


def _check(options: Mapping[str, Any], model: type[BaseModel], where: str) -> None:
    problems = problems_of(model, options)
    if problems:
        lines = "\n  ".join(problems)
        raise ConfigError(f"{where}: invalid configuration:\n  {lines}")


def resolve(entry: Mapping[str, Any], where: str = "config") -> type:
    """The Logger class an entry names with ``type`` (a registered name) or ``_target_``."""
    from fanlog.logger import Logger

    if TYPE_KEY in entry and TARGET_KEY in entry:
        raise ConfigError(f"{where}: give either '{TYPE_KEY}' or '{TARGET_KEY}', not both")
    if TYPE_KEY in entry:
        name = entry[TYPE_KEY]
        known = known_backends()
        if name not in known:
            raise ConfigError(
                f"{where}: unknown backend type {name!r}{did_you_mean(name, known)}; known types: "
                f"{', '.join(known)} (or give '{TARGET_KEY}: package.module.Class')"
            )
        try:
            return logger_type(name)
        except (ImportError, TypeError) as exc:
            raise ConfigError(f"{where}: backend type {name!r}: {exc}") from exc
    module, attr = _target_path(entry, where)
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}: cannot import {module}.{attr}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Logger)):
        raise ConfigError(f"{where}: {module}.{attr} is not a fanlog Logger class")
    return cls


def _target_path(entry: Mapping[str, Any], where: str) -> tuple[str, str]:
    """(module, class name) of a ``_target_``, after the aliases of :mod:`fanlog.compat`."""
    from fanlog.compat import TARGET_ALIASES

    target = entry[TARGET_KEY]
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"{where}: '{TARGET_KEY}' must be a dotted class path; got {target!r}")
    for prefix, replacement in TARGET_ALIASES.items():
        if target.startswith(prefix):
            target = replacement + target[len(prefix) :]
    module, _, attr = target.rpartition(".")
    return module, attr


# ---------------------------------------------------------------------------- declarations
def _entry_model(cls: type) -> type[BaseModel]:
    from fanlog.logger_options import options_model

    return options_model(cls)


def _collection_model(cls: type) -> type[BaseModel]:
    """A collection's options: its class's, less its members and what the members decide."""
    fields: dict[str, Any] = {
        name: (field.annotation, field)
        for name, field in _entry_model(cls).model_fields.items()
        if name not in (MEMBERS_KEY, *COLLECTION_FIXED)
    }
    return create_model(f"{cls.__name__}Config", __config__=_entry_model(cls).model_config, **fields)


def accepted_parameters(cls: type) -> dict[str, FieldInfo]:
    """The options a Logger class accepts in a configuration entry (name → pydantic field)."""
    return dict(_entry_model(cls).model_fields)


# ---------------------------------------------------------------------------- schema
def class_schema(cls: type, exclude: Sequence[str] = (), tag: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema of one logger entry, made from the class's declared options."""
    schema = options_schema(_entry_model(cls))
    properties = {**(tag or {}), **{k: v for k, v in schema["properties"].items() if k not in exclude}}
    found: dict[str, Any] = {
        "type": "object",
        "title": f"{cls.__module__}.{cls.__qualname__}",
        "properties": properties,
        "additionalProperties": False,
    }
    required = [name for name in schema.get("required", []) if name not in exclude]
    if required:
        found["required"] = required
    return found


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a fanlog configuration, generated from every registered backend."""
    from fanlog.logger import LoggersCollection

    defs: dict[str, Any] = {}
    skipped: list[str] = []
    for name in known_backends():
        try:
            cls = resolve({TYPE_KEY: name}, name)
        except ConfigError:
            skipped.append(name)
            continue
        entry = class_schema(cls, tag={TYPE_KEY: {"const": name}})
        entry["required"] = [TYPE_KEY, *entry.get("required", [])]
        defs[f"backend-{name}"] = entry
    defs["target"] = {
        "type": "object",
        "description": "any Logger class by dotted path; its options are checked against its declaration",
        "properties": {TARGET_KEY: {"type": "string"}},
        "required": [TARGET_KEY],
    }
    defs["entry"] = {
        "anyOf": [{"$ref": f"#/$defs/{key}"} for key in defs if key != "target"]
        + [{"$ref": "#/$defs/target"}]
    }
    collection = class_schema(LoggersCollection, exclude=(MEMBERS_KEY, *COLLECTION_FIXED))
    collection["properties"][MEMBERS_KEY] = {"type": "array", "items": {"$ref": "#/$defs/entry"}}
    collection["required"] = [MEMBERS_KEY]
    defs["collection"] = collection
    schema: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "fanlog configuration",
        "anyOf": [
            {"$ref": "#/$defs/entry"},
            {"$ref": "#/$defs/collection"},
            {"type": "array", "items": {"$ref": "#/$defs/entry"}},
        ],
        "$defs": defs,
    }
    if skipped:
        schema["$comment"] = f"backends left out (their module did not import): {', '.join(skipped)}"
    return schema


def _main() -> None:
    """`python -m fanlog.config`, the same as `fanlog config`."""
    from fanlog.cli.config import config_command

    config_command()


if __name__ == "__main__":
    _main()
