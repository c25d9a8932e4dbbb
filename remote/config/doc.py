"""The key reference of ``docs/cluster-toml.md``, generated from the config dataclasses.

Types come from the field annotations, defaults from the fields, meanings from the docstring
under each field, so the doc cannot drift from the parser. ``python -m remote.config.doc``
rewrites the part of the doc between the markers; a test checks it is up to date.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from remote.config import cluster as config
from remote.config.container import ContainerSection
from remote.config.toml import doc_type, field_hints
from trainer.settings.flags import field_docs as settings_docs

BEGIN = "<!-- BEGIN generated reference: python -m remote.config.doc -->"
END = "<!-- END generated reference -->"
DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "cluster-toml.md"


def _clean(text: str) -> str:
    """A docstring as one markdown line: RST literals to backticks, table pipes escaped."""
    return " ".join(text.split()).replace("``", "`").replace("|", "\\|")


def field_docs(cls: type) -> tuple[str, dict[str, str]]:
    """The class docstring and the docstring under each field (inherited ones included:
    ``[run]`` shares the trainer's), each as one markdown line."""
    summary, docs = settings_docs(cls)
    return _clean(summary), {name: _clean(text) for name, text in docs.items()}


def _default(f: dataclasses.Field[object]) -> str:
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    elif f.default is dataclasses.MISSING:
        return "**required**"
    else:
        value = f.default
    if value is None:
        return "not set"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"  # as TOML writes it
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    if isinstance(value, tuple):
        return f"`{list(value)!r}`"
    return f"`{value!r}`"


def render_reference() -> str:
    """The generated reference: one table per section, every key of every dataclass."""
    out: list[str] = []
    tables = [(config.HEADERS[name], cls) for name, cls in config.SECTIONS.items()]
    # a host's own sub-table follows [[hosts]]
    at = next(i for i, (_, cls) in enumerate(tables) if cls is config.HostSection) + 1
    tables.insert(at, ("[hosts.container]", ContainerSection))
    for header, cls in tables:
        summary, docs = field_docs(cls)
        hints = field_hints(cls)
        out += [f"### `{header}`", "", summary, "",
                "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for f in (f for f in dataclasses.fields(cls) if f.init):
            kind = "table" if f.type == "ContainerSection | None" else doc_type(hints[f.name])
            out.append(f"| `{f.name}` | {kind} | {_default(f)} | {docs.get(f.name, '')} |")
        out.append("")
    return "\n".join(out)


def splice(document: str, reference: str) -> str:
    """``document`` with the text between the markers replaced by ``reference``."""
    head, found, rest = document.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise ValueError(f"the doc lacks the markers {BEGIN!r} and {END!r}")
    return f"{head}{BEGIN}\n\n{reference}\n{END}{tail}"


def main() -> int:
    """Rewrite the reference in docs/cluster-toml.md (atomically); print whether it changed."""
    before = DOC_PATH.read_text(encoding="utf-8")
    after = splice(before, render_reference())
    if after == before:
        print(f"{DOC_PATH} is up to date")
        return 0
    fd, tmp = tempfile.mkstemp(dir=DOC_PATH.parent, prefix=".cluster-toml.", suffix=".md")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(after)
    os.replace(tmp, DOC_PATH)
    print(f"rewrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
