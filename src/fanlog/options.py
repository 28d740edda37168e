"""Options declared once, as pydantic models, and checked with messages that say what to fix.

A tracker's options are one :class:`BackendOptions` subclass. The tracker's backend, its
user-facing logger, configuration files (``fanlog config --schema``) and
``fanlog sync --to X -o key=value`` all read that one declaration: its fields, types,
defaults and descriptions. What a backend derives from the options every logger has
(``savedir``, ``experiment_name``, ...) reaches it in a :class:`BackendContext`.

Values are checked in pydantic's strict mode: a value of the wrong type is an error, not
converted (``"10"`` is not an int), so a typo in a YAML file is caught instead of guessed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

Workers = int | list[int]


class BackendOptions(BaseModel):
    """Base of every tracker's options: one typed field per option, with its default and a
    ``Field(description=...)`` that the signature, the config schema and the docs show.

    Two class-level tables link a tracker's options to the options every logger has:

    * ``common_defaults``: the tracker's own default for a common option (MLflow's
      ``experiment_name`` is ``"fanlog"``);
    * ``sets_common``: a common option this tracker spells its own way, and so does not
      accept (W&B's ``project_name`` is the run's ``experiment_name``).
    """

    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True, frozen=True)

    common_defaults: ClassVar[Mapping[str, Any]] = {}
    sets_common: ClassVar[Mapping[str, str]] = {}
    """common option → the tracker option whose value it takes."""


@dataclasses.dataclass(frozen=True)
class BackendContext:
    """What the core knows about the logger a backend is built for: the common options a
    backend may derive things from (MLflow's parent rank comes from ``log_on_workers``)."""

    savedir: str = "mllogs"
    experiment_name: str | None = None
    run_name: str | None = None
    log_on_workers: Workers = 0

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def with_defaults(self, defaults: Mapping[str, Any]) -> BackendContext:
        """This context, where a field that is None takes the tracker's default."""
        missing = {k: v for k, v in defaults.items() if getattr(self, k, "") is None}
        return dataclasses.replace(self, **missing) if missing else self


def did_you_mean(name: object, choices: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` for the closest of `choices`, or an empty string."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class OptionsError(ValueError):
    """Options that do not match their declaration; `problems` holds one line per option."""

    def __init__(self, owner: str, problems: list[str]) -> None:
        super().__init__(f"{owner}: " + "; ".join(problems))
        self.problems = problems


class OptionsTypeError(OptionsError, TypeError):
    """An unknown, missing or wrongly typed option (what Python raises for a bad argument)."""


def check(model: type[BaseModel], values: Mapping[str, Any], owner: str) -> BaseModel:
    """`values` validated by `model`, or an :class:`OptionsError` naming each bad option
    (a TypeError for an unknown, missing or wrongly typed one, else a ValueError)."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        problems, wrong_type = describe_errors(model, exc)
        raise (OptionsTypeError if wrong_type else OptionsError)(owner, problems) from None


def problems_of(model: type[BaseModel], values: Mapping[str, Any]) -> list[str]:
    """The problems :func:`check` would report, as lines (empty when `values` are valid)."""
    try:
        model.model_validate(dict(values))
    except ValidationError as exc:
        return describe_errors(model, exc)[0]
    return []


def describe_errors(model: type[BaseModel], exc: ValidationError) -> tuple[list[str], bool]:
    """One line per option pydantic refused (a union reports each of its members: they are
    merged into one line), and whether any is a TypeError-like problem (unknown, missing or
    of the wrong type) rather than a wrong value."""
    by_option: dict[str, list[Any]] = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        by_option.setdefault(name, []).append(error)
    fields = model.model_fields
    lines: list[str] = []
    wrong_type = False
    for name, errors in by_option.items():
        kinds = {e["type"] for e in errors}
        value = errors[0].get("input")
        if "extra_forbidden" in kinds:
            lines.append(
                f"unknown option {name!r}{did_you_mean(name, fields)}; accepted: {', '.join(sorted(fields))}"
            )
        elif "missing" in kinds:
            lines.append(f"missing required option {name!r}")
        elif kinds <= {"literal_error", "enum"}:
            choices = tuple(_schema_of(model, name).get("enum", ()))
            lines.append(f"{name} must be one of {choices}; got {value!r}")
            continue
        elif kinds == {"value_error"}:  # a field validator's own message
            lines.append(f"{name}: {errors[0]['ctx']['error']}")
            continue
        else:
            lines.append(
                f"{name}: expected {expected(_schema_of(model, name))}, got {type(value).__name__} {value!r}"
            )
        wrong_type = True
    return lines, wrong_type


def _schema_of(model: type[BaseModel], name: str) -> dict[str, Any]:
    return json_schema(model).get("properties", {}).get(name, {})


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type", [])
    return list(kind) if isinstance(kind, list) else [kind]


def expected(schema: Mapping[str, Any]) -> str:
    """A field's accepted JSON types, in words (``integer or string``)."""
    if "enum" in schema:
        return f"one of {schema['enum']}"
    kinds = _types(schema) + [expected(option) for option in schema.get("anyOf", [])]
    return " or ".join(dict.fromkeys(kinds)) if kinds else "a value of another type"


# ---------------------------------------------------------------------------- JSON Schema
@functools.cache
def _schema_generator() -> type:
    """pydantic's JSON Schema generator, where a Python-only type (a stream, a credential)
    is ``{}`` (imported when a schema is first asked for: not on the training path)."""
    from pydantic.json_schema import GenerateJsonSchema

    class Schema(GenerateJsonSchema):
        def is_instance_schema(self, schema: Any) -> dict[str, Any]:
            return {}

        def callable_schema(self, schema: Any) -> dict[str, Any]:
            return {}

    return Schema


_SCHEMAS: dict[type[BaseModel], dict[str, Any]] = {}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of an options model, in the plain form config files read best:
    ``"type": ["string", "null"]`` rather than an ``anyOf`` of one-type schemas."""
    found = _SCHEMAS.get(model)
    if found is None:
        raw = model.model_json_schema(schema_generator=_schema_generator())
        raw.pop("title", None)
        properties = {name: simplify(prop) for name, prop in raw.get("properties", {}).items()}
        found = _SCHEMAS[model] = {**raw, "properties": properties}
    return found


def simplify(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's titles and path formats; merge an ``anyOf`` of plain types into one
    ``type`` list; an ``anyOf`` that allows anything is ``{}``."""
    schema = {k: v for k, v in schema.items() if k != "title" and not (k == "format" and v == "path")}
    if schema.get("type") == "object" and schema.get("additionalProperties") is True:
        del schema["additionalProperties"]
    options = schema.pop("anyOf", None)
    if options is None:
        return schema
    merged: list[dict[str, Any]] = []
    for option in map(simplify, options):
        if option not in merged:
            merged.append(option)
    if {} in merged:
        return schema
    if all(set(o) == {"type"} for o in merged):
        names = [o["type"] for o in merged]
        return {**schema, "type": names[0] if len(names) == 1 else names}
    if all(set(o) <= {"type", "enum"} for o in merged) and any("enum" in o for o in merged):
        nulls = [o for o in merged if o.get("type") == "null"]
        enums = [o for o in merged if "enum" in o]
        if len(enums) == 1 and len(enums) + len(nulls) == len(merged):
            return {**schema, "enum": enums[0]["enum"] + ([None] if nulls else [])}
    return {**schema, "anyOf": merged}


def jsonable(value: Any) -> bool:
    """True if `value` survives ``json.dumps`` (what a journal row or a schema default needs)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
