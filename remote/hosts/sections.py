"""Several probes in one shell command, their outputs told apart by marker lines.

Every SSH command costs a round trip (a channel to open, a shell to start), so corral batches
the questions it asks a host into one command per host and phase: each part is framed by
``@@corral-check NAME`` and ``@@corral-check NAME end STATUS`` lines.
"""

from __future__ import annotations

from collections.abc import Mapping

SECTION = "@@corral-check "
MISSING = ("", 1)
"""What ``split_sections`` gives a section that did not report: no text, exit status 1."""


def sectioned_script(parts: Mapping[str, str]) -> str:
    """One POSIX shell command running every ``name: command`` part in order, framed."""
    return "; ".join(f"echo '{SECTION}{name}'; {{ {command}; }}; echo '{SECTION}{name} end' $?"
                     for name, command in parts.items())


def split_sections(stdout: str) -> dict[str, tuple[str, int]]:
    """``sectioned_script`` output: per section, its text and exit status."""
    sections: dict[str, tuple[str, int]] = {}
    current: str | None = None
    lines: list[str] = []
    for line in stdout.splitlines():
        if not line.startswith(SECTION):
            lines.append(line)
            continue
        words = line[len(SECTION):].split()
        if len(words) == 1:
            current, lines = words[0], []
        elif len(words) == 3 and words[0] == current and words[2].lstrip("-").isdigit():
            sections[current] = ("\n".join(lines), int(words[2]))
            current = None
    return sections


def section_text(sections: Mapping[str, tuple[str, int]], name: str) -> str:
    """The text of section ``name`` ("" when it did not report)."""
    return sections.get(name, MISSING)[0]
