"""A small YAML writer for manifests: plain dicts, lists, strings, numbers, booleans and None.

Strings that a YAML reader could take for something else (numbers, booleans, ``null``, text
with ``:`` or ``#``) are written double-quoted; a multi-line string as a literal block, so the
pods' start script reads as it runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence

PLAIN_RE = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*\Z")
YAML11_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
"""Words a YAML 1.1 reader turns into booleans or null."""


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if PLAIN_RE.match(text) and text.lower() not in YAML11_WORDS:
        return text
    return json.dumps(text)


def _block_text(text: str, indent: int) -> str | None:
    """``text`` as a literal block (``|`` or ``|-``), or None when one cannot hold it."""
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    if (not lines or text.endswith("\n\n") or lines[0][:1] in (" ", "")
            or any(not line.isprintable() or line != line.rstrip() for line in lines)):
        return None
    pad = " " * indent
    body = "\n".join(pad + line if line else "" for line in lines)
    return ("|" if text.endswith("\n") else "|-") + "\n" + body


def _inline(value: object, indent: int) -> str:
    if isinstance(value, Mapping) and not value:
        return "{}"
    if isinstance(value, list | tuple) and not value:
        return "[]"
    if isinstance(value, str) and "\n" in value:
        return _block_text(value, indent) or _scalar(value)
    return _scalar(value)


def _is_block(value: object) -> bool:
    return isinstance(value, Mapping | list | tuple) and bool(value)


def _node(value: Mapping[str, object] | Sequence[object], indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            if _is_block(item):
                out.append(f"{pad}{_scalar(str(key))}:")
                _node(item, indent + 2, out)  # type: ignore[arg-type]
            else:
                out.append(f"{pad}{_scalar(str(key))}: {_inline(item, indent + 2)}")
        return
    for item in value:
        if _is_block(item):
            inner: list[str] = []
            _node(item, indent + 2, inner)  # type: ignore[arg-type]
            out.append(f"{pad}- {inner[0][indent + 2:]}")
            out.extend(inner[1:])
        else:
            out.append(f"{pad}- {_inline(item, indent + 2)}")


def dump(document: Mapping[str, object]) -> str:
    """One YAML document for ``document``."""
    out: list[str] = []
    _node(document, 0, out)
    return "\n".join(out) + "\n"


def dump_all(documents: Iterable[Mapping[str, object]]) -> str:
    """A YAML stream: each document after a ``---`` line."""
    return "".join(f"---\n{dump(document)}" for document in documents)
