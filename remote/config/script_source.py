"""What corral reads from a user's script on this machine before anything starts.

A script that does not parse would fail on every host after the push and the rendezvous; it is
named here, with its line. What it imports is read by ``remote.checks.import_scan``; the
process-group timeouts it writes as literals by ``group_timeouts`` (a timeout longer than
``[run] hang_limit`` is said before the run starts).
"""

from __future__ import annotations

import ast
import datetime
from dataclasses import dataclass
from pathlib import Path


def _parse(source: Path) -> ast.Module:
    return ast.parse(source.read_bytes(), filename=str(source))


def syntax_problem(source: Path) -> str | None:
    """``"FILE:LINE: ..."`` when the script at ``source`` does not parse or cannot be read."""
    try:
        _parse(source)
    except SyntaxError as exc:
        return (f"{source}:{exc.lineno}: syntax error: {exc.msg}; fix the script (python "
                f"{source.name} shows the same)")
    except (OSError, ValueError) as exc:
        return f"{source} cannot be read: {exc}"
    return None


TIMEDELTA_ARGS = ("days", "seconds", "microseconds", "milliseconds", "minutes", "hours", "weeks")
"""``datetime.timedelta``'s parameters, in its positional order."""
GROUP_CALLS = {"init_process_group": 2, "InitProcessGroupKwargs": 1}
"""Calls that set a process group's timeout, with the position ``timeout`` takes when given
without its name (torch's ``init_process_group(backend, init_method, timeout)``, accelerate's
``InitProcessGroupKwargs(backend, timeout)``)."""


@dataclass(frozen=True)
class GroupTimeout:
    """A process-group timeout the script writes as literal values."""

    line: int
    """Its line in the script (1-based)."""
    seconds: float
    call: str
    """``init_process_group`` or ``InitProcessGroupKwargs``."""


def group_timeouts(source: Path) -> list[GroupTimeout]:
    """The process-group timeouts the script at ``source`` sets with literal values
    (``timeout=timedelta(minutes=60)``), read from its syntax tree: nothing is imported or run.

    A timeout computed from a variable, an argument or anything else is not knowable here
    and is left out (the rank says it when it makes its group). A script that cannot be read
    or parsed has none (``syntax_problem`` names it).
    """
    try:
        tree = _parse(source)
    except (SyntaxError, OSError, ValueError):
        return []
    found: list[GroupTimeout] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or (name := _called(node.func)) not in GROUP_CALLS:
            continue
        given = {k.arg: k.value for k in node.keywords if k.arg}
        at = GROUP_CALLS[name]
        value = given.get("timeout", node.args[at] if len(node.args) > at else None)
        seconds = _timedelta_seconds(value)
        if seconds is not None:
            found.append(GroupTimeout(line=node.lineno, seconds=seconds, call=name))
    return found


def _called(func: ast.expr) -> str | None:
    """The name a call calls: ``f`` of ``f(...)`` and of ``a.b.f(...)``."""
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None


def _timedelta_seconds(value: ast.expr | None) -> float | None:
    """Seconds of a ``timedelta(...)`` call (any module path) of number literals; None when
    ``value`` is anything else."""
    if not isinstance(value, ast.Call) or _called(value.func) != "timedelta":
        return None
    parts = dict(zip(TIMEDELTA_ARGS, value.args, strict=False))
    parts.update({k.arg: k.value for k in value.keywords if k.arg})
    if len(value.args) > len(TIMEDELTA_ARGS) or any(k.arg is None for k in value.keywords):
        return None
    numbers: dict[str, float] = {}
    for name, node in parts.items():
        number = node.value if isinstance(node, ast.Constant) else None
        if name not in TIMEDELTA_ARGS or not isinstance(number, int | float) \
                or isinstance(number, bool):
            return None
        numbers[name] = float(number)
    try:
        return datetime.timedelta(**numbers).total_seconds()
    except (OverflowError, TypeError):
        return None
