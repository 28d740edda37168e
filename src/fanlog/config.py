"""Loggers from configuration: ``fanlog.from_config("fanlog.yaml")``, so trackers change without code.

A configuration is YAML (or a dict) in one of three shapes::

    type: mlflow                 # one backend: a registered name ...
    experiment_name: demo

    _target_: fanlog.backends.tensorboard.TensorBoardLogger   # ... or a dotted class path

    savedir: runs                # a collection: options of LoggersCollection, and
    loggers:                     # its members (a bare list is a collection too)
      - type: mlflow
      - {type: tensorboard, log_freq: batch}

``_target_`` is the Hydra / itwinai / torchtune spelling; ``itwinai.loggers.X`` targets
map to :mod:`fanlog.compat.itwinai`. Options are checked against a JSON Schema made
from the logger classes' ``__init__`` signatures (:func:`json_schema`); a wrong key, value
type or backend name is a :class:`ConfigError` that says what is accepted. The schema is
checked by the small validator in this module (no ``jsonschema`` dependency); it uses
only ``type``, ``const``, ``enum``, ``properties``, ``required``, ``additionalProperties``,
``items``, ``anyOf`` and local ``$ref``.

Without an argument, :func:`from_config` reads the file named by ``FANLOG_CONFIG``.
``python -m fanlog.config [FILE] [--schema]`` checks a file or prints the schema.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import inspect
import json
import os
import re
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from fanlog.backend import BACKENDS
from fanlog.errors import FanlogError

if TYPE_CHECKING:
    from fanlog.logger import Logger

CONFIG_ENV = "FANLOG_CONFIG"
TYPE_KEY = "type"
TARGET_KEY = "_target_"
MEMBERS_KEY = "loggers"
TARGET_ALIASES = {"itwinai.loggers.": "fanlog.compat.itwinai."}
"""Dotted-path prefixes rewritten before import: itwinai configs run unchanged on fanlog."""

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
    path = os.fspath(source)
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
    logger = _build_top(data, overrides, used)
    unused = sorted(set(overrides) - used)
    if unused:
        raise ConfigError(f"override(s) {unused} are not an option of any configured logger")
    return logger


def _build_top(data: Any, overrides: Mapping[str, Any], used: set[str]) -> Any:
    if isinstance(data, (list, tuple)):
        return _build_collection({MEMBERS_KEY: list(data)}, "config", overrides, used, None)
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping or a list, got {type(data).__name__}")
    if TYPE_KEY in data or TARGET_KEY in data:
        cls = resolve(data, "config")
        if _is_collection(cls):
            return _build_collection(data, "config", overrides, used, cls)
        return _build_entry(data, "config", overrides, used)
    if MEMBERS_KEY in data:
        return _build_collection(data, "config", overrides, used, None)
    raise ConfigError(
        f"config: expected a logger (with '{TYPE_KEY}' or '{TARGET_KEY}') or a collection (with "
        f"'{MEMBERS_KEY}'); got keys {sorted(map(str, data))}"
    )


def _is_collection(cls: type) -> bool:
    from fanlog.logger import LoggersCollection

    return isinstance(cls, type) and issubclass(cls, LoggersCollection)


def _build_collection(
    data: Mapping[str, Any], where: str, overrides: Mapping[str, Any], used: set[str], cls: type | None
) -> Any:
    from fanlog.logger import LoggersCollection

    cls = cls or LoggersCollection
    members = data.get(MEMBERS_KEY)
    if not isinstance(members, (list, tuple)) or not members:
        raise ConfigError(f"{where}: '{MEMBERS_KEY}' must be a non-empty list of logger entries")
    loggers = [_build_entry(m, f"{where}.{MEMBERS_KEY}[{i}]", overrides, used) for i, m in enumerate(members)]
    options = {k: v for k, v in data.items() if k not in (MEMBERS_KEY, TYPE_KEY, TARGET_KEY)}
    schema = class_schema(cls, exclude=(MEMBERS_KEY,))
    options.update(_overrides_for(schema, overrides, used))
    _check(options, schema, f"{where} ({cls.__name__})")
    return _construct(cls, where, loggers, **options)


def _build_entry(entry: Any, where: str, overrides: Mapping[str, Any], used: set[str]) -> Any:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping with '{TYPE_KEY}' or '{TARGET_KEY}', got {entry!r}")
    cls = resolve(entry, where)
    if _is_collection(cls):
        return _build_collection(entry, where, overrides, used, cls)
    label = f"{where} ({entry.get(TYPE_KEY) or entry.get(TARGET_KEY)})"
    options = {k: v for k, v in entry.items() if k not in (TYPE_KEY, TARGET_KEY)}
    schema = class_schema(cls)
    options.update(_overrides_for(schema, overrides, used))
    _check(options, schema, label)
    return _construct(cls, label, **options)


def _overrides_for(schema: Mapping[str, Any], overrides: Mapping[str, Any], used: set[str]) -> dict[str, Any]:
    accepted = schema["properties"]
    chosen = {k: v for k, v in overrides.items() if k in accepted}
    used.update(chosen)
    return chosen


def _construct(cls: type, where: str, *args: Any, **options: Any) -> Any:
    try:
        return cls(*args, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {cls.__name__}({', '.join(options)}) failed: {exc}") from exc


def resolve(entry: Mapping[str, Any], where: str = "config") -> type:
    """The Logger class an entry names with ``type`` (a registered name) or ``_target_``."""
    from fanlog.logger import Logger

    if TYPE_KEY in entry and TARGET_KEY in entry:
        raise ConfigError(f"{where}: give either '{TYPE_KEY}' or '{TARGET_KEY}', not both")
    if TYPE_KEY in entry:
        name = entry[TYPE_KEY]
        if name not in BACKENDS:
            raise ConfigError(
                f"{where}: unknown backend type {name!r}{_did_you_mean(name, BACKENDS)}; known types: "
                f"{', '.join(sorted(BACKENDS))} (or give '{TARGET_KEY}: package.module.Class')"
            )
        module, _, attr = BACKENDS[name].partition(":")
    else:
        target = entry[TARGET_KEY]
        if not isinstance(target, str) or "." not in target:
            raise ConfigError(f"{where}: '{TARGET_KEY}' must be a dotted class path; got {target!r}")
        for prefix, replacement in TARGET_ALIASES.items():
            if target.startswith(prefix):
                target = replacement + target[len(prefix):]
        module, _, attr = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}: cannot import {module}.{attr}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Logger)):
        raise ConfigError(f"{where}: {module}.{attr} is not a fanlog Logger class")
    return cls


def _did_you_mean(name: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------- schema
def accepted_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword options of `cls`: its ``__init__`` and, through ``**kwargs``, its bases' and
    :class:`fanlog.pipeline.PipelineSettings` fields (what ``Logger(**pipeline)`` takes)."""
    from fanlog.logger import Logger
    from fanlog.pipeline import PipelineSettings

    found: dict[str, inspect.Parameter] = {}
    fixed: set[str] = set()  # given by a subclass to super().__init__: not the user's to set
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        forwards = False
        hints = _hints(init)
        for name, param in inspect.signature(init).parameters.items():
            if name == "self" or param.kind is param.VAR_POSITIONAL:
                continue
            if param.kind is param.VAR_KEYWORD:
                forwards = True
                continue
            if name not in fixed:
                found.setdefault(name, param.replace(annotation=hints.get(name, Any)))
        fixed |= _passed_to_super(init)
        if klass is Logger:
            hints = _hints(PipelineSettings)
            for field in dataclasses.fields(PipelineSettings):
                missing = field.default is dataclasses.MISSING
                default = inspect.Parameter.empty if missing else field.default
                found.setdefault(field.name, inspect.Parameter(
                    field.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                    annotation=hints.get(field.name, Any)))  # fmt: skip
            break
        if not forwards:
            break
    return found


def _passed_to_super(init: Any) -> set[str]:
    """Keywords an ``__init__`` gives ``super().__init__(...)`` explicitly (read from its source)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "__init__"
            and isinstance(node.func.value, ast.Call)
            and isinstance(node.func.value.func, ast.Name)
            and node.func.value.func.id == "super"
        ):
            names.update(k.arg for k in node.keywords if k.arg is not None)
    return names


def _hints(owner: Any) -> dict[str, Any]:
    """Evaluated annotations (they are strings here); none if one cannot be evaluated."""
    try:
        return typing.get_type_hints(owner)
    except Exception:
        return {}


def type_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of a Python annotation; ``{}`` (anything) for types YAML cannot spell."""
    if tp is Any or tp is inspect.Parameter.empty:
        return {}
    if tp is type(None) or tp is None:
        return {"type": "null"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options: list[dict[str, Any]] = []
        for option in map(type_schema, args):
            if option not in options:
                options.append(option)
        if {} in options:
            return {}
        if all(set(o) == {"type"} for o in options):  # plain types: one "type" list
            names = [o["type"] for o in options]
            return {"type": names[0] if len(names) == 1 else names}
        return {"anyOf": options}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if tp is os.PathLike or origin is os.PathLike:
        return {"type": "string"}
    if origin in (list, tuple, set, frozenset) or origin in (Sequence, typing.Sequence):
        item = type_schema(args[0]) if args else {}
        return {"type": "array", "items": item} if item else {"type": "array"}
    if tp in (list, tuple):
        return {"type": "array"}
    if tp in (dict, Mapping) or origin in (dict, Mapping, typing.Mapping):
        return {"type": "object"}
    return {}


def _descriptions(cls: type) -> dict[str, str]:
    """``name: text`` lines of the "Args:" sections in the docstrings of `cls` and its bases."""
    found: dict[str, str] = {}
    for klass in cls.__mro__:
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        in_args = False
        for line in doc.splitlines():
            if line.strip() in ("Args:", "Arguments:"):
                in_args = True
                continue
            match = re.match(r"^\s{2,8}([\w*, ]+):\s+(.*)$", line) if in_args else None
            if match:
                for name in match.group(1).replace("*", "").split(","):
                    found.setdefault(name.strip(), match.group(2).strip())
            elif in_args and line and not line.startswith(" "):
                in_args = False
    return found


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def class_schema(cls: type, exclude: Sequence[str] = (), tag: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema of one logger entry, made from the class's ``__init__`` signature."""
    text = _descriptions(cls)
    properties: dict[str, Any] = dict(tag or {})
    required: list[str] = []
    for name, param in accepted_parameters(cls).items():
        if name in exclude:
            continue
        prop = type_schema(param.annotation)
        if param.default is inspect.Parameter.empty:
            required.append(name)
        elif _jsonable(param.default):
            prop = {**prop, "default": param.default}
        if name in text:
            prop = {**prop, "description": text[name]}
        properties[name] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "title": f"{cls.__module__}.{cls.__qualname__}",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a fanlog configuration, generated from every registered backend."""
    from fanlog.logger import LoggersCollection

    defs: dict[str, Any] = {}
    skipped: list[str] = []
    for name in sorted(BACKENDS):
        try:
            cls = resolve({TYPE_KEY: name}, name)
        except ConfigError:
            skipped.append(name)
            continue
        defs[f"backend-{name}"] = class_schema(cls, tag={TYPE_KEY: {"const": name}})
        defs[f"backend-{name}"]["required"] = [TYPE_KEY, *defs[f"backend-{name}"].get("required", [])]
    defs["target"] = {
        "type": "object",
        "description": "any Logger class by dotted path; its options are checked against its signature",
        "properties": {TARGET_KEY: {"type": "string"}},
        "required": [TARGET_KEY],
    }
    defs["entry"] = {"anyOf": [{"$ref": f"#/$defs/{key}"} for key in defs if key != "target"]
                     + [{"$ref": "#/$defs/target"}]}  # fmt: skip
    collection = class_schema(LoggersCollection, exclude=(MEMBERS_KEY,))
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


# ---------------------------------------------------------------------------- validation
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (Mapping,),
    "array": (list, tuple),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def validate(instance: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None,
             path: str = "") -> list[str]:  # fmt: skip
    """Errors of `instance` against `schema` (the subset of JSON Schema this module emits)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported; got {ref!r}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return validate(instance, target, root, path)
    where = path or "config"
    if "anyOf" in schema:
        results = [validate(instance, option, root, path) for option in schema["anyOf"]]
        if all(results):
            best = min(results, key=len)
            return best if len(results) == 1 else [f"{where}: matches none of the accepted forms; "
                                                   f"closest: {'; '.join(best)}"]  # fmt: skip
        return []
    errors: list[str] = []
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(instance, k) for k in kinds):
            return [f"{where}: expected {' or '.join(kinds)}, got {type(instance).__name__} {instance!r}"]
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}, got {instance!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{where}: expected one of {schema['enum']}, got {instance!r}")
    if isinstance(instance, Mapping):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{where}: missing required option {key!r}")
        for key, value in instance.items():
            if key in properties:
                errors.extend(validate(value, properties[key], root, f"{path}.{key}" if path else str(key)))
            elif schema.get("additionalProperties", True) is False:
                errors.append(
                    f"unknown option {key!r}{_did_you_mean(key, properties)}; "
                    f"accepted: {', '.join(sorted(properties))}"
                )
    if isinstance(instance, (list, tuple)) and "items" in schema:
        for index, item in enumerate(instance):
            errors.extend(validate(item, schema["items"], root, f"{path}[{index}]"))
    return errors


def _is_type(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "number" and isinstance(value, float):
        return True
    return isinstance(value, _JSON_TYPES[kind])


def _check(options: Mapping[str, Any], schema: Mapping[str, Any], where: str) -> None:
    errors = validate(dict(options), schema)
    if errors:
        lines = "\n  ".join(errors)
        raise ConfigError(f"{where}: invalid configuration:\n  {lines}")


@click.command("config")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--schema", is_flag=True, help="Print the JSON Schema of configuration files and exit.")
def config_command(path: str | None, schema: bool) -> None:
    """Check a logger configuration file (default: $FANLOG_CONFIG), or print its JSON Schema.

    The loggers the file describes are built but not started, so an unknown option,
    backend or value shows up here instead of at the start of a training job.
    """
    if schema:
        click.echo(json.dumps(json_schema(), indent=2, default=str))
        return
    try:
        logger = from_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    names = [type(m).__name__ for m in logger.members()] or [type(logger).__name__]
    click.echo(f"{path or os.environ.get(CONFIG_ENV)}: OK ({', '.join(names)})")


if __name__ == "__main__":
    config_command()
