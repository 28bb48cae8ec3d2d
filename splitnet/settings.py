"""One validator for settings read from TOML: a frozen dataclass says what is allowed.

    TOML table ─► from_table(cls, table, where) ─► every key known, every value of its
                  field's type (int, float, str, bool, Path, a tuple, or None where the
                  field allows it; an int is a float where a float is asked for)
                  ─► cls(**values): the class's own __post_init__ checks ranges and
                     combinations

Every refusal is a SettingsError that names the file, the key, what was given and what
was expected.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting that is unknown, of the wrong type, or out of range."""


def from_table(cls: type[T], table: dict[str, Any], where: str,
               relative_to: Path | None = None) -> T:
    """An instance of the dataclass ``cls`` from a TOML table; paths are taken relative to
    ``relative_to`` (the file's folder) when given."""
    if not isinstance(table, dict):
        raise SettingsError(f"{where}: expected a table of settings")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - fields)
    if unknown:
        raise SettingsError(f"{where}: unknown keys {unknown}; known keys: {sorted(fields)}")
    values = {key: _coerce(value, hints[key], f"{where}: {key}", relative_to)
              for key, value in table.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        if isinstance(error, SettingsError):
            raise
        raise SettingsError(f"{where}: {error}") from None


def _coerce(value: Any, kind: Any, where: str, relative_to: Path | None) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arm, where, relative_to)
            except SettingsError as error:
                problems.append(str(error))
        raise SettingsError(problems[0] if len(problems) == 1 else
                            f"{where}: {value!r} is none of {_name(kind)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where, relative_to) for v in value)
        if len(value) != len(args):
            raise SettingsError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where, relative_to) for v, a in zip(value, args, strict=True))
    if kind is Path:
        if not isinstance(value, str):
            raise SettingsError(f"{where}: expected a path (a string), got {value!r}")
        return (relative_to / value) if relative_to is not None else Path(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind in (int, str, bool):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SettingsError(f"{where}: expected {_name(kind)}, got {value!r}")
        return value
    return value


def _name(kind: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, str(kind))
