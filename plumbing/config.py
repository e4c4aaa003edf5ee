"""Typed job configs: a pydantic model filled from YAML, then ``key=value`` overrides.

Every job has one config model (:class:`JobConfig`) whose fields carry their
documentation (``Field(description=...)``) and their constraints (``Literal``,
bounds, validators), as ``ray.data.llm``'s ``ProcessorConfig`` does. A config is
checked when it is built, from a file, the command line or keyword arguments;
unknown keys, values of the wrong type and broken constraints raise
:class:`ConfigError` naming the key, so a typo never silently falls back to a
default. This module is the only place that reads config YAML or ``key=value``.
"""

from __future__ import annotations

import os
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
)

T = TypeVar("T", bound="JobConfig")


class ConfigError(ValueError):
    """A config file or override that does not fit the job's config class."""


class ClusterTooSmallError(ConfigError):
    """The run asks for workers, CPUs or GPUs that the cluster does not have."""


# How pydantic's strict type errors read to a person editing a YAML file.
EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "list_type": "a list",
}


class JobConfig(BaseModel):
    """Base of every job's config: strict types, no unknown keys, checked when built.

    Types are strict (``epochs: three`` is an error, not a default), with the
    readings YAML needs: a float given as ``3e-5`` (a string to YAML 1.1), a number
    or a path where a string is expected, one item where a list is expected.
    Direct construction raises :class:`ConfigError` too, so the message is the same
    whether a value came from a file, an override or code.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    def __init__(self, /, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ConfigError(explain(type(self), err)) from None

    @field_validator("*", mode="before")
    @classmethod
    def _read_as_yaml(cls, value: Any, info) -> Any:
        return _loosen(value, cls.model_fields[info.field_name].annotation)


def _positive_amounts(value: dict[str, float], info: ValidationInfo) -> dict[str, float]:
    if any(not v > 0 for v in value.values()):
        raise ConfigError(f"{info.field_name}: each amount must be > 0")
    return value


# Custom Ray resources an actor or worker needs, by name; each amount above 0.
Resources = Annotated[dict[str, float], AfterValidator(_positive_amounts)]


def _loosen(value: Any, annotation: Any) -> Any:
    """The conversions a YAML scalar needs before the strict type check."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        members = [a for a in args if a is not type(None)]
        return _loosen(value, members[0]) if len(members) == 1 else value
    if origin is list:
        items = list(value) if isinstance(value, list | tuple) else [value]
        return [_loosen(item, args[0]) for item in items] if args else items
    if annotation is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "3e-5" (no dot) as a string
        except ValueError:
            return value
    if annotation is str and not isinstance(value, bool) and isinstance(value, int | float):
        return str(value)
    if annotation is str and isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def explain(cls: type[BaseModel], err: ValidationError) -> str:
    """pydantic's errors as this project's messages, one per key (``; ``-joined)."""
    errors = err.errors()
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return (
            f"unknown key(s) for {cls.__name__}: {', '.join(unknown)}; "
            f"valid keys: {', '.join(sorted(cls.model_fields))}"
        )
    missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing"]
    if missing:
        return f"missing key(s) for {cls.__name__}: {', '.join(missing)}"
    return "; ".join(_message(e) for e in errors)


def _message(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    if kind in EXPECTED:
        return f"{key}: expected {EXPECTED[kind]}, got {value!r}"
    if kind == "value_error":  # a validator's own message names its keys
        return str(ctx["error"])
    if kind == "literal_error":
        return f"{key} must be {ctx['expected']}, got {value!r}"
    if kind == "greater_than_equal":
        return f"{key} must be at least {ctx['ge']}, got {value!r}"
    if kind == "greater_than":
        bound = "positive" if ctx["gt"] == 0 else f"greater than {ctx['gt']}"
        return f"{key} must be {bound}, got {value!r}"
    if kind in ("less_than", "less_than_equal"):
        bound = f"below {ctx['lt']}" if "lt" in ctx else f"at most {ctx['le']}"
        return f"{key} must be {bound}, got {value!r}"
    return f"{key}: {error['msg']}, got {value!r}"


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=3e-5", "workers=2"]`` -> ``{"lr": 3e-5, "workers": 2}`` (values read as YAML)."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value")
        try:
            parsed[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from err
    return parsed


def _set(values: dict[str, Any], key: str, value: Any) -> None:
    """``values[key] = value``; a dotted key (``annotate.decoding``) sets one entry of a mapping."""
    head, dot, rest = key.partition(".")
    if not dot:
        values[key] = value
        return
    if not isinstance(values.get(head), dict):
        values[head] = {}
    _set(values[head], rest, value)


def read_yaml_mapping(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A YAML file holding one mapping (empty: ``{}``); the one place files are read as YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of key: value")
    return loaded or {}


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> T:
    """Read ``path`` (YAML mapping) into ``cls``, then apply overrides, and check it.

    ``overrides`` are ``key=value`` strings, or a mapping of keys already parsed.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_yaml_mapping(path, "config file"))
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    for key, value in overrides.items():
        _set(values, key, value)
    return cls(**values)


def describe(cls: type[BaseModel]) -> str:
    """One line per field: name, default and description, for ``--help`` output."""
    lines = []
    for name, field in cls.model_fields.items():
        default = "required" if field.is_required() else f"default {field.default!r}"
        lines.append(f"  {name} ({default}): {field.description or ''}")
    return "\n".join(lines)


def parse_job_args(
    cls: type[T], argv: Sequence[str] | None, prog: str, description: str | None
) -> T:
    """The command line every job shares: ``--config FILE`` then ``key=value`` overrides.

    ``--help`` lists every key of ``cls`` with its default and description.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="config keys (key=value; a mapping's entry: key.name=value):\n" + describe(cls),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help=f"YAML file of {cls.__name__} keys")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    return load_config(cls, args.config, args.overrides)


def job_main(
    cls: type[T], errors: tuple[type[Exception], ...] = ()
) -> Callable[[Callable[[T], int]], Callable[[Sequence[str] | None], int]]:
    """A job's ``main(config) -> exit code`` as the ``main(argv=None) -> exit code`` it runs as.

    The command line is parsed into ``cls`` by :func:`parse_job_args` (prog and
    description from the job's module); a :class:`ConfigError` there, or one of
    ``errors`` raised by the job, is printed as ``error: ...`` on stderr and the
    exit code is 2, as every job's was.
    """

    def decorate(run: Callable[[T], int]) -> Callable[[Sequence[str] | None], int]:
        module = sys.modules[run.__module__]

        def main(argv: Sequence[str] | None = None) -> int:
            prog = f"python -m {getattr(module.__spec__, 'name', run.__module__)}"
            try:
                config = parse_job_args(cls, argv, prog, module.__doc__)
            except ConfigError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            try:
                return run(config)
            except errors as err:
                print(f"error: {err}", file=sys.stderr)
                return 2

        return main

    return decorate
