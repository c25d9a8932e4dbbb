"""The one error a bad cluster.toml raises, and the pieces its message is made of.

Every problem in a file is collected first and reported together, each line naming the file,
the section and the key (``cluster.toml: [run] steps: must be at least 1``), so a user fixes
everything in one pass instead of one error per attempt.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from profiles.user_errors import UsageError

Problems = list[tuple[str, str]]
"""What a validator found: (where, what is wrong) pairs, reported together."""


@dataclass(frozen=True, kw_only=True)
class ConfigProblem:
    """One thing wrong with a cluster.toml."""

    path: Path | None
    """The file (None for a config built in code)."""
    where: str
    """The section and key: ``[run] steps``, ``hosts[2] (name "gpu1").port``, ``[clustr]``;
    empty for a problem with the file as a whole."""
    message: str
    """What is wrong and, where possible, the fix."""

    def __str__(self) -> str:
        parts = [str(self.path)] if self.path is not None else []
        parts += [self.where] if self.where else []
        return ": ".join([*parts, self.message])


class ConfigError(UsageError):
    """A cluster.toml that cannot be used: every problem in it, one per line (exit code 2)."""

    title = "cluster.toml is invalid"

    def __init__(self, problems: Sequence[ConfigProblem] | str, *,
                 title: str | None = None) -> None:
        if isinstance(problems, str):  # a plain message (also how a pickled copy is rebuilt)
            problems = [ConfigProblem(path=None, where="", message=problems)]
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        lines = [str(p) for p in self.problems]
        if len(lines) == 1:
            message = lines[0]
        else:
            message = f"{len(lines)} problems\n" + "\n".join(f"  {line}" for line in lines)
        super().__init__(message, title=title)


def section_where(section: str, key: str | None = None) -> str:
    """``[section] key`` (or ``[section]`` for the section itself)."""
    return f"[{section}]" if key is None else f"[{section}] {key}"


def host_where(index: int | None, name: object, key: str | None = None) -> str:
    """``hosts[2] (name "gpu1").key``: the index is the node rank order, the name if known."""
    label = "hosts" if index is None else f"hosts[{index}]"
    if isinstance(name, str) and name:
        label += f" (name {quote(name)})"
    return label if key is None else f"{label}.{key}"


def quote(value: object) -> str:
    """A value as the user would write it in TOML (strings in double quotes)."""
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + "".join(c if c.isprintable() else repr(c)[1:-1] for c in escaped) + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` was most likely meant to be (a typo, other case), or None."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(word: str, choices: Iterable[str], *, fmt: str = "'{}'") -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""`` when nothing is close."""
    match = closest(word, choices)
    return f"; did you mean {fmt.format(match)}?" if match is not None else ""


def file_order(problem: ConfigProblem) -> tuple[int, int]:
    """Problems in the order of the file's sections (unknown sections first)."""
    head = problem.where.split(" ")[0].split(".")[0]
    if head.startswith("hosts["):
        return 2, int(head[len("hosts["):-1])
    return {"[cluster]": 1, "[[hosts]]": 2, "[run]": 3, "[ssh]": 4}.get(head, 0), -1


def file_error(path: Path, message: str, *, title: str | None = None) -> ConfigError:
    """A problem with the whole file (missing, unreadable, not TOML)."""
    problem = ConfigProblem(path=path, where="", message=message)
    return ConfigError([problem], title=title or f"cannot read {path.name}")


def check_section(section: str, problems: list[tuple[str, str]]) -> None:
    """Raise the problems a dataclass found in its own values (a config built in code)."""
    if problems:
        raise ConfigError([ConfigProblem(path=None, where=f"{section}{key}", message=msg)
                           for key, msg in problems])
