"""Flags generated from a settings dataclass: the ``python -m trainer`` parser and the launch
flags that fill it come from the same fields, so a field added to ``TrainConfig`` (or to the
``RunSettings`` it shares with cluster.toml) is a flag, a launch flag and help text at once.

A field's flag is ``--`` and its name with ``-`` for ``_`` (or its metadata's ``flag``), its
help the docstring under it, its ``--help`` group and metavar from its metadata
(``trainer.settings.setting``), its value form from its type (``trainer.settings.flag_types``).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Any

from profiles.user_errors import UsageError
from trainer.settings.flag_types import NO_LIMIT, value_kind


def field_docs(cls: type) -> tuple[str, dict[str, str]]:
    """The class docstring's first paragraph and the docstring under each field of a
    dataclass (one line each; a field declared again in a subclass takes the subclass's
    docstring)."""
    docs: dict[str, str] = {}
    for owner in reversed(cls.__mro__):
        if not is_dataclass(owner):
            continue
        try:
            node = ast.parse(inspect.getsource(owner)).body[0]
        except (OSError, TypeError):  # no source (a frozen build): no help text, still flags
            continue
        assert isinstance(node, ast.ClassDef)
        for stmt, following in zip(node.body, node.body[1:], strict=False):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[stmt.target.id] = " ".join(following.value.value.split())
    first_paragraph = (inspect.getdoc(cls) or "").split("\n\n")[0]
    summary = re.sub(r"^``[^`]+``: ", "", " ".join(first_paragraph.split()))
    return summary[:1].upper() + summary[1:], docs


def flag_name(f: Field[Any]) -> str:
    """The field's flag: ``--global-batch`` for ``global_batch``."""
    return str(f.metadata.get("flag") or "--" + f.name.replace("_", "-"))


def _default(f: Field[Any]) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None if f.default is MISSING else f.default


def _argument(f: Field[Any], hint: Any) -> dict[str, Any]:
    """``add_argument`` keywords for one field."""
    if hint is bool:  # off by default: a switch; on by default: --x / --no-x
        action = argparse.BooleanOptionalAction if _default(f) else "store_true"
        return {"action": action, "default": _default(f)}
    kind = value_kind(hint)
    spec: dict[str, Any] = {"type": kind.parse, "default": _default(f)}
    if kind.choices is not None:
        spec["choices"] = kind.choices
    metavar = f.metadata.get("metavar", kind.metavar)
    if metavar is not None:
        spec["metavar"] = metavar
    if kind.repeated:  # argparse appends to a list; the field's value is a tuple
        spec.update(action="append", default=None)
    return spec


def check_fields(config: Any) -> None:
    """Each field's own rules, from its type and metadata: a ``Literal`` field holds one of
    its values, a bounded one (a number, or each entry of a tuple) is within its bounds.
    Raises ``UsageError`` naming the flag."""
    hints = field_hints(type(config))
    for f in fields(config):
        value, flag = getattr(config, f.name), flag_name(f)
        choices = value_kind(hints[f.name]).choices if hints[f.name] is not bool else None
        if choices is not None and value not in choices:
            raise UsageError(f"unknown {flag} {value!r}; choose one of {', '.join(choices)}")
        entries = value if isinstance(value, tuple) else (value,)
        for key, sign in (("at_least", ">="), ("above", ">")):
            low = f.metadata.get(key)
            if low is not None and any(
                    v is not None and not (v >= low if key == "at_least" else v > low)
                    for v in entries):
                shown = ",".join(NO_LIMIT if v is None else str(v) for v in entries)
                raise UsageError(f"{flag} must be {sign} {low:g}, got {shown}")


def field_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a settings dataclass (cached per class)."""
    cached = _FIELD_HINTS.get(cls)
    if cached is None:
        cached = _FIELD_HINTS[cls] = typing.get_type_hints(cls)
    return cached


_FIELD_HINTS: dict[type, dict[str, Any]] = {}


def build_parser(cls: type, *, prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with one flag per field of the dataclass ``cls``, grouped as its metadata says,
    the field's docstring as the help and its default as the flag's default."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _, docs = field_docs(cls)
    hints = field_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(cls):
        title = str(f.metadata.get("group", "other settings"))
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        text = docs.get(f.name, "").replace("``", "").replace("%", "%%")
        groups[title].add_argument(flag_name(f), dest=f.name, help=text,
                                   **_argument(f, hints[f.name]))
    return parser


def parsed_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The field values of ``cls`` in a namespace ``build_parser(cls)`` made."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        value = getattr(args, f.name)
        if value is None:  # not given (a repeated flag's parser default is None)
            value = _default(f)
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return values


def flag_words(values: Mapping[str, Any], cls: type) -> list[str]:
    """The flags that give the fields of ``cls`` named in ``values`` those values, in that
    order (unquoted). None leaves a field out (its default); a boolean is written only when
    it differs from the default (``--resume``, ``--no-pin-cores``)."""
    by_name = {f.name: f for f in fields(cls)}
    hints = field_hints(cls)
    words: list[str] = []
    for name, value in values.items():
        f = by_name[name]
        flag = flag_name(f)
        if value is None:
            continue
        if hints[name] is bool:
            if value != _default(f):
                words.append(flag if value else f"--no-{flag[2:]}")
            continue
        kind = value_kind(hints[name])
        for item in (value if kind.repeated else (value,)):
            text = kind.format(item)  # "-x" would read as an option: "--flag=-x" cannot
            words += [f"{flag}={text}"] if text.startswith("-") else [flag, text]
    return words


def config_flags(config: Any, leave_out: Sequence[str] = ()) -> list[str]:
    """The flags that rebuild the dataclass instance ``config`` (fields in ``leave_out``
    left to the caller)."""
    return flag_words({f.name: getattr(config, f.name) for f in fields(config)
                       if f.name not in leave_out}, type(config))
