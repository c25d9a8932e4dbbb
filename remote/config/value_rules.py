"""The rules of single values, and the keys whose rules their fields declare.

A section's field says what its key must be (``key(...)`` in its metadata: a name, a one-word
text, a port, bounds); ``key_problems`` applies that to one section's values, and a ``Literal``
field holds one of its choices. The rules of every section's keys are so declared beside each
key (``remote/config/cluster.py``, ``exports.py``); ``remote/config/rules.py`` adds what relates
several keys. ``[run]``'s shared settings declare theirs with
``trainer.settings.run_settings.setting`` (the same ``at_least``/``above``/``text``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any, Literal, TypeGuard, get_args, get_origin

from remote.config.errors import Problems, did_you_mean, quote
from trainer.settings.flags import field_hints

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
"""Cluster and host names: they end up in run ids, file names and log prefixes."""
NAME_MAX_CHARS = 63
"""The longest cluster or host name: a host name's label length, long enough for any name a
person types, short enough for a run id, a file name and one console line."""


def is_whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_at_least(out: Problems, values: Mapping[str, Any], key: str, low: int) -> None:
    value = values.get(key)
    if is_whole(value) and value < low:
        out.append((key, f"must be at least {low}, got {value}"))


def check_at_most(out: Problems, values: Mapping[str, Any], key: str, high: int) -> None:
    value = values.get(key)
    if is_whole(value) and value > high:
        out.append((key, f"must be at most {high}, got {value}"))


def check_address(out: Problems, values: Mapping[str, Any], key: str) -> None:
    """A host name must fit DNS: labels of at most 63 characters, 253 in all."""
    value = values.get(key)
    if not isinstance(value, str) or value == "local" or ":" in value:
        return
    if len(value) > 253 or any(len(label) > 63 for label in value.split(".")):
        out.append((key, f"is not a usable host name: at most 253 characters, each part "
                         f"between dots at most 63 (got {len(value)} characters)"))


def check_number(out: Problems, values: Mapping[str, Any], key: str, low: float, *,
            inclusive: bool) -> None:
    value = values.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if not math.isfinite(value):
        out.append((key, f"must be a finite number, got {value}"))
    elif value < low or (value == low and not inclusive):
        bound = "at least" if inclusive else "greater than"
        out.append((key, f"must be {bound} {low:g}, got {value:g}"))


def check_port(out: Problems, values: Mapping[str, Any], key: str) -> None:
    value = values.get(key)
    if is_whole(value) and not 1 <= value <= 65535:
        out.append((key, f"must be a port number from 1 to 65535, got {value}"))


def check_choice(out: Problems, values: Mapping[str, Any], key: str,
                 choices: Sequence[str]) -> None:
    value = values.get(key)
    if isinstance(value, str) and value not in choices:
        listed = ", ".join(quote(c) for c in choices)
        hint = did_you_mean(value, choices, fmt='"{}"')
        out.append((key, f"must be one of {listed}, got {quote(value)}{hint}"))


def check_text(out: Problems, values: Mapping[str, Any], key: str, *, token: bool = False) -> None:
    """Non-empty, no control characters; a ``token`` also has no spaces and no leading ``-``
    (it becomes one argument of ssh or a shell command, never an option)."""
    value = values.get(key)
    if not isinstance(value, str):
        return
    if not value.strip():
        out.append((key, "must not be empty"))
    elif any(not c.isprintable() for c in value):
        out.append((key, f"must not contain control characters, got {quote(value)}"))
    elif token and (value.startswith("-") or any(c.isspace() for c in value)):
        out.append((key, f"must be one word not starting with '-', got {quote(value)}"))


def check_name(out: Problems, values: Mapping[str, Any], key: str) -> None:
    value = values.get(key)
    if isinstance(value, str) and len(value) > NAME_MAX_CHARS:
        out.append((key, f"must be at most {NAME_MAX_CHARS} characters (it names runs, files "
                         f"and console lines), got {len(value)}: {quote(value[:20])}..."))
    elif isinstance(value, str) and not NAME_RE.match(value):
        out.append((key, f"must be letters, digits, '.', '_' or '-' (starting with a letter "
                         f"or digit), got {quote(value)}"))


TextRule = Callable[[str], str | None]
"""A text key's own rule: why its value cannot be used (None or "" when it can)."""


def key(*, name: bool = False, text: bool = False, token: bool = False, address: bool = False,
        port: bool = False, at_least: float | None = None, above: float | None = None,
        at_most: float | None = None, ssh_only: bool = False,
        rule: TextRule | None = None) -> dict[str, Any]:
    """A cluster.toml key's rules, as its field's metadata: ``name`` (a cluster or host name),
    ``text`` (non-empty, printable; ``token``: also one word not starting with ``-``),
    ``address`` (fits DNS), ``port`` (1 to 65535), bounds (``at_least``: value >= it, a whole
    number's when the field holds whole numbers; ``above``: value > it; ``at_most``: the
    largest value, so that no value builds billions of ranks), ``ssh_only`` (means nothing on
    a ``local`` host), ``rule`` (what else a text value must be: a run name, a Kubernetes
    name, a storage size)."""
    rules = {"name": name, "text": text or token, "token": token, "address": address,
             "port": port, "at_least": at_least, "above": above, "at_most": at_most,
             "ssh_only": ssh_only, "rule": rule}
    return {k: v for k, v in rules.items() if v is not None and v is not False}


def key_problems(cls: type, values: Mapping[str, Any]) -> Problems:
    """Every key's own rules, as the fields of the section dataclass ``cls`` declare them."""
    out: Problems = []
    hints = field_hints(cls)
    for f in fields(cls):
        meta = f.metadata
        if meta.get("name"):
            check_name(out, values, f.name)
        if meta.get("text"):
            check_text(out, values, f.name, token=bool(meta.get("token")))
        if meta.get("address"):
            check_address(out, values, f.name)
        if meta.get("port"):
            check_port(out, values, f.name)
        if (low := meta.get("at_least")) is not None:
            if isinstance(low, int) and not _holds_fractions(hints[f.name]):
                check_at_least(out, values, f.name, low)
            else:
                check_number(out, values, f.name, low, inclusive=True)
        if (low := meta.get("above")) is not None:
            check_number(out, values, f.name, low, inclusive=False)
        if (high := meta.get("at_most")) is not None:
            _below_bound(out, values, f.name, high)
        if get_origin(hints[f.name]) is Literal:
            check_choice(out, values, f.name, get_args(hints[f.name]))
        value = values.get(f.name)
        rule = meta.get("rule")
        if rule is not None and isinstance(value, str) and (problem := rule(value)):
            out.append((f.name, problem))
    return out


def _holds_fractions(hint: object) -> bool:
    """True for a field that holds a ``float`` (alone or in a union): its bounds are a
    number's, whatever the bound's own type (``momentum`` is at least ``0``)."""
    return hint is float or float in get_args(hint)


def ssh_only_keys(cls: type) -> tuple[str, ...]:
    """The keys of ``cls`` that mean something only for a host reached over SSH."""
    return tuple(f.name for f in fields(cls) if f.metadata.get("ssh_only"))


def upper_bounds(cls: type) -> dict[str, float]:
    """Each bounded key of ``cls`` and its largest value."""
    return {f.name: f.metadata["at_most"] for f in fields(cls) if "at_most" in f.metadata}


def _below_bound(out: Problems, values: Mapping[str, Any], key_name: str, high: float) -> None:
    value = values.get(key_name)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > high:
        out.append((key_name, f"must be at most {high:g}, got {value:g}"))


def section_values(section: object) -> dict[str, Any]:
    """A section dataclass's values by key, as its rules read them."""
    return {f.name: getattr(section, f.name) for f in fields(section)}  # type: ignore[arg-type]
