"""How a settings field's type becomes flag text and back: ``value_kind(hint)`` gives the
parser (text -> value, raising ``argparse.ArgumentTypeError`` showing what was expected) and the
formatter (value -> text) of one field type, so ``python -m trainer``'s parser and the launch
flags (``trainer.settings.flags``) read and write every value the same way."""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

NO_LIMIT = "-"
"""A tuple entry of None (no cap, no limit) as flag text."""


@dataclass(frozen=True)
class ValueKind:
    """One field type as flag text."""

    parse: Callable[[str], Any]
    """Text -> value; raises ``argparse.ArgumentTypeError`` naming the expected form."""
    format: Callable[[Any], str]
    """Value -> text ``parse`` reads back to an equal value."""
    metavar: str | None = None
    """The form shown in ``--help`` (None: argparse's default, the flag's name)."""
    choices: tuple[str, ...] | None = None
    """A ``Literal`` field's values."""
    repeated: bool = False
    """One flag per entry (``action="append"``), for tuples of pairs or records."""


def _list(text: str, convert: Callable[[str], Any], example: str) -> tuple[Any, ...]:
    try:
        return tuple(convert(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {example}; got {text!r}") from None


def int_list(text: str) -> tuple[int, ...]:
    return _list(text, int, "comma-separated integers like 24,8")


def cap_list(text: str) -> tuple[int | None, ...]:
    return _list(text, lambda p: None if p.strip() in ("", NO_LIMIT, "none") else int(p),
                 "comma-separated integers or '-' (no cap) like 64,-")


def float_list(text: str) -> tuple[float, ...]:
    return _list(text, float, "comma-separated numbers like 1,3")


def task_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE like lora_r=16; got {text!r}")
    return key.strip(), value


def _csv(values: Any, one: Callable[[Any], str] = str) -> str:
    return ",".join(NO_LIMIT if v is None else one(v) for v in values)


def _members(hint: Any) -> list[Any]:
    if get_origin(hint) in (Union, types.UnionType):
        return [a for a in get_args(hint) if a is not type(None)]
    return [hint]


def value_kind(hint: Any) -> ValueKind:
    """The ``ValueKind`` of a field annotation (``X | None`` is read as ``X``)."""
    (base,) = _members(hint)
    origin = get_origin(base)
    if origin is Literal:
        return ValueKind(str, str, choices=get_args(base))
    if base in (int, str):
        return ValueKind(base, str)
    if base is float:
        return ValueKind(float, repr)
    if origin is not tuple:
        raise TypeError(f"no flag form for the field type {hint!r}")
    element = get_args(base)[0]
    if element is int:
        return ValueKind(int_list, _csv, "N,N,...")
    if element is float:
        return ValueKind(float_list, lambda v: _csv(v, repr), "X,X,...")
    if _members(element) == [int]:
        return ValueKind(cap_list, _csv, f"N,{NO_LIMIT},...")
    if element == tuple[str, str]:
        return ValueKind(task_option, lambda kv: f"{kv[0]}={kv[1]}", "KEY=VALUE", repeated=True)
    if hasattr(element, "from_text"):  # a record such as SlowdownChange
        return ValueKind(element.from_text, lambda r: r.to_text(), element.FORM,
                         repeated=True)
    raise TypeError(f"no flag form for the field type {hint!r}")
