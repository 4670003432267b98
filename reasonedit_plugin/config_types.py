"""Strict typing of configuration values: what a YAML section may hold, checked field by field.

Every config dataclass (``config.py``, ``gate_config.py``) is built through :func:`build_section`, which rejects
unknown keys with a did-you-mean and values of the wrong type with a message naming the field (a quoted 'no' is
not false, 2.5 is not an integer, .nan is not a number); :func:`require` and :func:`check_choice` are the
one-line checks their ``__post_init__`` run.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields
from typing import Any, Mapping, Type, TypeVar, Union

from .errors import ConfigError, did_you_mean

T = TypeVar("T")


def require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"{name}={value!r} is not one of {list(choices)}.{did_you_mean(str(value), choices)}"
        )


MAX_INT = 2 ** 63 - 1
"""Integers in a config must fit in 64 bits (seeds, counts)."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return {list: "a list", dict: "a mapping"}.get(origin, str(origin))
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, getattr(
        tp, "__name__", str(tp)))


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INT
    if tp is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= 1e300
                and math.isfinite(value))
    if origin is tuple:  # YAML and JSON have lists, not tuples
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args)))
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, tp) if isinstance(tp, type) else True


def check_types(cls: type, values: Mapping[str, Any], section: str) -> None:
    """Strict YAML types: true/false for switches (a quoted 'no' is not false), integers where integers
    (no 2.5, no bool), finite numbers (no .nan), strings where strings. Raises ConfigError naming the field."""
    hints = typing.get_type_hints(cls)
    prefix = f"{section}." if section else ""
    for key, value in values.items():
        tp = hints.get(key)
        if tp is None or _matches(value, tp):
            continue
        shown = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else "a huge integer"
        hint = ""
        if tp is bool and isinstance(value, str):
            hint = " Write true or false without quotes."
        elif isinstance(value, float) and not math.isfinite(value):
            hint = " NaN and infinity are not allowed."
        elif isinstance(value, int) and abs(value) > MAX_INT:
            hint = " Integers must be below 2**63."
        raise ConfigError(f"{prefix}{key}={shown[:60]}: expected {_type_name(tp)}, got {type(value).__name__}.{hint}")


def build_section(cls: Type[T], values: Any, section: str) -> T:
    """Build dataclass ``cls`` from a mapping (or pass an instance through), rejecting unknown keys."""
    if isinstance(values, cls):
        return values
    if values is None:
        return cls()
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"section {section!r} must be a mapping of field: value, got {type(values).__name__}."
        )
    known = {f.name for f in fields(cls) if f.init}
    for key in values:
        if key not in known:
            raise ConfigError(
                f"unknown key {str(key)[:40]!r} in section {section!r}.{did_you_mean(str(key), known)} "
                f"Valid keys: {sorted(known)}."
            )
    check_types(cls, values, section)
    try:
        return cls(**dict(values))
    except TypeError as exc:  # wrong arity is already excluded; keep the message readable
        raise ConfigError(f"section {section!r}: {exc}") from exc
