"""Typed job configs: a dataclass filled from YAML, then ``key=value`` overrides.

Every job has one flat config dataclass whose fields carry their documentation
in ``metadata["help"]``. Unknown keys and values of the wrong type are errors
that name the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the job's config class."""


class ClusterTooSmallError(ConfigError):
    """The run asks for workers, CPUs or GPUs that the cluster does not have."""


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its documentation attached."""
    if isinstance(default, list | dict):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs
        )
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


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


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation, converting the harmless cases."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            value = [value]
        inner = args[0] if args else Any
        return [_coerce(name, v, inner) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "3e-5" (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


def build_config(cls: type[T], values: dict[str, Any]) -> T:
    """Instantiate ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) for {cls.__name__}: {', '.join(unknown)}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {key: _coerce(key, value, hints[key]) for key, value in values.items()}
    return cls(**kwargs)


def load_config(
    cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()
) -> T:
    """Read ``path`` (YAML mapping) into ``cls``, then apply ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a YAML mapping of key: value")
        values.update(loaded or {})
    values.update(parse_overrides(overrides))
    return build_config(cls, values)


def describe(cls: type) -> str:
    """One line per field: name, default and help, for ``--help`` output."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name} (default {default!r}): {f.metadata.get('help', '')}")
    return "\n".join(lines)


def parse_job_args(
    cls: type[T], argv: Sequence[str] | None, prog: str, description: str | None
) -> T:
    """The command line every job shares: ``--config FILE`` then ``key=value`` overrides.

    ``--help`` lists every key of ``cls`` with its default and documentation.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="config keys:\n" + describe(cls),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help=f"YAML file of {cls.__name__} keys")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    return load_config(cls, args.config, args.overrides)
