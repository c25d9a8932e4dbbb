"""Which files of a user's folder are pushed: code, not what training leaves beside it.

A script's folder often holds what earlier runs wrote there (logs, checkpoints, TensorBoard
and MLflow directories, a venv, a dataset): pushing it to every host costs time and disk and
changes the folder's digest on every run. ``DEFAULT_IGNORE`` leaves those out; a
``.corralignore`` file in the folder adds patterns, one a line, gitignore-like:

- a blank line or one starting with ``#`` is nothing;
- a pattern without ``/`` (``*.log``, ``wandb``) matches a file or directory of that name at
  any depth; one with a ``/`` inside (``data/raw``, ``/notes.txt``) matches the path from the
  folder (a leading ``/`` only anchors it there);
- a trailing ``/`` matches directories only; ``*``, ``?`` and ``[...]`` are shell wildcards
  (``*`` does not cross a ``/``);
- a leading ``!`` pushes again what an earlier pattern (a default too) left out: the last
  pattern matching a path decides, and a directory left out leaves out all it holds.

The folder's own ``.gitignore`` (its top-level one) counts too, read before ``.corralignore``
with the same rules, so what git leaves out is not pushed either.

A directory holding ``__init__.py`` is a Python package of the user's: the defaults never
leave it out (a ``data`` package is code), only ``.gitignore``/``.corralignore`` can.
Symbolic links, special files and the size budget are ``remote.hosts.push_tree``'s.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IGNORE_FILE = ".corralignore"
"""The file, in the pushed folder, whose patterns add to ``DEFAULT_IGNORE``."""
GIT_IGNORE_FILE = ".gitignore"
"""git's file, in the pushed folder, read before ``IGNORE_FILE``."""

DEFAULT_IGNORE = (
    ".*",  # hidden entries: .git, .venv, .corralignore itself, editor state
    "__pycache__/", "*.pyc",
    "venv/", "env/", "*.egg-info/",
    "*.log", "logs/", "nohup.out",
    "checkpoints/", "checkpoint-*/", "runs/", "wandb/", "mlruns/", "lightning_logs/",
    "output/", "outputs/", "out/",
    "data/", "datasets/",
    "*.pt", "*.pth", "*.ckpt", "*.safetensors",
)
"""Left out of every pushed user folder (docs/scripts.md lists them); ``!name`` in
``.corralignore`` pushes one again."""


@dataclass(frozen=True, kw_only=True)
class IgnorePattern:
    """One line of an ignore list, parsed."""

    glob: str
    """The shell wildcard, without its ``!``, anchoring ``/`` or trailing ``/``."""
    negated: bool
    """``!pattern``: matching paths are pushed again."""
    directories_only: bool
    """A trailing ``/``: only directories match."""
    anchored: bool
    """A ``/`` before its end: matched against the whole path from the folder."""

    def matches(self, rel: PurePosixPath, is_dir: bool) -> bool:
        """Whether this pattern matches ``rel`` (relative to the folder)."""
        if self.directories_only and not is_dir:
            return False
        if self.anchored:
            return len(rel.parts) == len(PurePosixPath(self.glob).parts) and all(
                fnmatch.fnmatchcase(part, glob)
                for part, glob in zip(rel.parts, PurePosixPath(self.glob).parts, strict=True))
        return fnmatch.fnmatchcase(rel.name, self.glob)


def parse_pattern(line: str) -> IgnorePattern | None:
    """The pattern on one line of an ignore list; None for a blank or comment line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    negated = text.startswith("!")
    text = text.removeprefix("!")
    directories_only = text.endswith("/")
    text = text.rstrip("/")
    anchored = "/" in text
    return IgnorePattern(glob=text.lstrip("/"), negated=negated,
                         directories_only=directories_only, anchored=anchored)


def _parsed(lines: list[str]) -> list[IgnorePattern]:
    return [pattern for pattern in map(parse_pattern, lines) if pattern is not None]


def own_patterns(folder: Path) -> list[IgnorePattern]:
    """The folder's ``.gitignore`` then ``.corralignore`` lines, in order (none without them)."""
    lines: list[str] = []
    for name in (GIT_IGNORE_FILE, IGNORE_FILE):
        ignore_file = folder / name
        if ignore_file.is_file() and not ignore_file.is_symlink():
            lines += ignore_file.read_text(errors="replace").splitlines()
    return _parsed(lines)


def _ignored(patterns: list[IgnorePattern], rel: PurePosixPath, is_dir: bool) -> bool:
    verdict = False
    for pattern in patterns:  # the last matching pattern decides, as in gitignore
        if pattern.matches(rel, is_dir):
            verdict = not pattern.negated
    return verdict


def is_ignored(patterns: list[IgnorePattern], rel: PurePosixPath, is_dir: bool) -> bool:
    """Whether ``rel`` (relative to the pushed folder) is left out by ``patterns``."""
    return _ignored(patterns, rel, is_dir)


def patterns_for(folder: Path) -> tuple[list[IgnorePattern], list[IgnorePattern]]:
    """``(own, every)``: the folder's own patterns (what applies to a package of its) and the
    defaults followed by them (what applies to everything else)."""
    own = own_patterns(folder)
    return own, _parsed(list(DEFAULT_IGNORE)) + own
