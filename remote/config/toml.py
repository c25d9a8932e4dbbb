"""TOML values against the dataclass field types of cluster.toml.

The field annotations are the schema: ``int | Literal["auto"]``, ``tuple[int, ...] | None``,
``dict[str, str]`` and so on. ``coerce`` checks a parsed TOML value against one and returns
the Python value (an array becomes a tuple, an integer a float where a float is wanted) or
raises ``TypeMismatch`` with a message that says what was expected and what was found.
"""

from __future__ import annotations

import datetime
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from typing import Any, Literal, Union, get_args, get_origin

from remote.config.errors import did_you_mean, quote
from trainer.settings.flags import field_hints

__all__ = ["field_hints"]  # the config dataclasses' annotations, as the trainer reads its own


class TypeMismatch(Exception):
    """A TOML value of the wrong type or outside a field's choices (the message says which)."""


def toml_type(value: object) -> str:
    """The TOML kind of a parsed value, with an article: ``a string``, ``an array``."""
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
        (list, "an array"), (dict, "a table"), (datetime.datetime, "a date-time"),
        (datetime.date, "a date"), (datetime.time, "a time"),
    ]
    return next((name for kind, name in kinds if isinstance(value, kind)), "a value")


def _found(value: object) -> str:
    if isinstance(value, list | dict):
        return toml_type(value)
    return f"{toml_type(value)} ({quote(value)})"


def _is_union(hint: object) -> bool:
    return get_origin(hint) in (Union, types.UnionType)


def _members(hint: object) -> list[Any]:
    """The non-None alternatives of a union, or the type itself."""
    if _is_union(hint):
        return [a for a in get_args(hint) if a is not type(None)]
    return [hint]


def _element_words(hint: object) -> str:
    """``integers`` or ``strings``: the elements of a ``tuple[X, ...]`` field."""
    return "strings" if get_args(hint)[0] is str else "integers"


def describe(hint: object) -> str:
    """What a field accepts, for error messages: ``an integer or "auto"``."""
    parts = []
    for member in _members(hint):
        origin = get_origin(member)
        if origin is Literal and len(get_args(member)) > 1:
            parts.append("one of " + ", ".join(quote(a) for a in get_args(member)))
        elif origin is Literal:
            parts.append(quote(get_args(member)[0]))
        elif origin is tuple:
            parts.append(f"an array of {_element_words(member)}")
        elif origin is dict:
            parts.append("a table of strings" if get_args(member)[1] is str
                         else "a table of values")
        else:
            parts.append({int: "an integer", float: "a number", str: "a string",
                          bool: "true or false"}.get(member, str(member)))
    return " or ".join(parts)


def doc_type(hint: object) -> str:
    """What a field accepts, for the reference doc: ``integer | "auto"``."""
    parts: list[str] = []
    for member in _members(hint):
        origin = get_origin(member)
        if origin is Literal:
            parts.extend(f"`{quote(a)}`" for a in get_args(member))
        elif origin is tuple:
            parts.append(f"array of {_element_words(member)}")
        elif origin is dict:
            parts.append("table of strings" if get_args(member)[1] is str else "table")
        else:
            parts.append({int: "integer", float: "number", str: "string",
                          bool: "boolean"}.get(member, str(member)))
    return " \\| ".join(parts)


def coerce(value: object, hint: object) -> Any:
    """``value`` as the field type ``hint`` wants it."""
    members = _members(hint)
    for member in members:
        try:
            return _coerce_one(value, member)
        except TypeMismatch as error:
            if len(members) == 1:
                raise TypeMismatch(f"{error}") from None
    words = [a for m in members if get_origin(m) is Literal for a in get_args(m)]
    hint_text = did_you_mean(value, words, fmt='"{}"') if isinstance(value, str) else ""
    raise TypeMismatch(f"expected {describe(hint)}, got {_found(value)}{hint_text}")


def _coerce_one(value: object, hint: Any) -> Any:
    origin = get_origin(hint)
    if origin is Literal:
        if isinstance(value, str) and value in get_args(hint):
            return value
        hint_text = did_you_mean(value, get_args(hint), fmt='"{}"') \
            if isinstance(value, str) else ""
        raise TypeMismatch(f"expected {describe(hint)}, got {_found(value)}{hint_text}")
    if origin is tuple:
        if not isinstance(value, list):
            raise TypeMismatch(f"expected {describe(hint)}, got {_found(value)}")
        element = get_args(hint)[0]
        for index, item in enumerate(value):
            if not isinstance(item, element) or isinstance(item, bool):
                raise TypeMismatch(f"expected {describe(hint)}, but element {index} is "
                                   f"{_found(item)}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeMismatch(f"expected {describe(hint)}, got {_found(value)}")
        if get_args(hint)[1] is Any:  # [run.task_options]: any TOML value but a table
            for key, item in value.items():
                if not isinstance(item, str | int | float | list):  # bool is an int
                    raise TypeMismatch(f"expected {describe(hint)} (strings, numbers, "
                                       f"booleans, arrays), but {key} is {toml_type(item)}")
            return dict(value)
        for key, item in value.items():
            if not isinstance(item, str):
                fix = f"; quote it: {quote(str(item).lower())}" \
                    if isinstance(item, int | float) else ""
                raise TypeMismatch(f"expected {describe(hint)}, but {key} is "
                                   f"{toml_type(item)}{fix}")
        return dict(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and isinstance(value, hint) and (
            hint is bool or not isinstance(value, bool)):
        return value
    raise TypeMismatch(f"expected {describe(hint)}, got {_found(value)}")


def typed_fields(cls: type, raw: Mapping[str, Any],
                 report: Callable[[str, str], None]) -> dict[str, Any]:
    """The values of one TOML table for the dataclass ``cls``, each ``report(key, problem)``ed.

    Unknown keys get a "did you mean"; keys with a wrong type are left out (so they are
    reported once, not again by a rule that reads them); keys not given get their defaults;
    a missing required key is reported.
    """
    settable = {f.name for f in fields(cls) if f.init}  # others are derived, not keys
    hints = {name: hint for name, hint in field_hints(cls).items() if name in settable}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            report(key, "unknown key" + did_you_mean(key, hints))
            continue
        try:
            values[key] = coerce(value, hints[key])
        except TypeMismatch as error:
            report(key, str(error))
    for f in fields(cls):
        if f.name in raw or not f.init:
            continue
        if f.default is not MISSING:
            values[f.name] = f.default
        elif f.default_factory is not MISSING:
            values[f.name] = f.default_factory()
        else:
            report(f.name, "missing; this key is required")
    return values
