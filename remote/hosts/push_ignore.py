"""What of a user's folder travels, and how: code, data, or nothing.

A rank sees what it would see under torchrun on a shared disk: every file of the launch folder
travels, whatever its name, extension or ``.gitignore`` status, except what cannot matter to a
run (``DEFAULT_IGNORE``: version-control metadata, virtual environments, bytecode, tool caches).
Its code goes with the trainer in the pushed tree. Its data goes by the data sync
(``remote.hosts.data_sync``, content-addressed, sent once per host): ``DATA_PATTERNS``
(``data/``, prepared arrays and shards, corpora, tokenizer files), ``OUTPUT_PATTERNS``
(checkpoints, weights, logs), what the folder's ``.gitignore`` leaves out (prepared shards in a
folder of any name), and any file larger than ``remote.hosts.push_tree.CODE_FILE_BYTES``.
A ``.corralignore`` file in the folder has the last word, one pattern a line, gitignore-like:

- a blank line or one starting with ``#`` is nothing;
- a pattern without ``/`` (``*.log``, ``wandb``) matches a file or directory of that name at
  any depth; one with a ``/`` inside (``data/raw``, ``/notes.txt``) matches the path from the
  folder (a leading ``/`` only anchors it there);
- a trailing ``/`` matches directories only; ``*``, ``?`` and ``[...]`` are shell wildcards
  (``*`` does not cross a ``/``);
- a plain pattern leaves out (what stays home is listed before launch); a leading ``!`` sends
  again what an earlier pattern (a default too) left out: the last pattern matching a path
  decides, and a directory left out leaves out all it holds.

A directory holding ``__init__.py`` is a Python package of the user's: the defaults never
leave it out (a ``data`` package is code), only ``.corralignore`` can.
Symbolic links, special files and the size budget are ``remote.hosts.push_tree``'s.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

IGNORE_FILE = ".corralignore"
"""The file, in the pushed folder, whose patterns add to ``DEFAULT_IGNORE``."""
GIT_IGNORE_FILE = ".gitignore"
"""git's file, in the pushed folder, read before ``IGNORE_FILE``."""

DEFAULT_IGNORE = (
    ".git/", ".hg/", ".svn/", ".jj/",  # version-control metadata
    ".venv/", "venv/", "*.egg-info/",  # virtual environments (any other: its pyvenv.cfg)
    "__pycache__/", "*.pyc", "*.pyo",  # bytecode
    ".mypy_cache/", ".pytest_cache/", ".ruff_cache/", ".tox/", ".nox/", ".ipynb_checkpoints/",
    ".idea/", ".vscode/", ".DS_Store",  # tool caches and editor state
    ".launch-lock-*/",  # corral's own lock, where the run root lies in the folder
)
"""What cannot matter to a run, left out of every user folder (docs/scripts.md lists them):
everything else travels, as torchrun on a shared disk shows a script every file of its folder;
``!name`` in ``.corralignore`` sends one again."""

OUTPUT_PATTERNS = (
    "checkpoints/", "checkpoint-*/", "runs/", "wandb/", "mlruns/", "lightning_logs/",
    "output/", "outputs/", "out/", "out-*/", "out_*/", "logs/",
    "*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.log", "nohup.out",
)
"""What earlier runs wrote (checkpoints, weights, logs): it travels as data (large, and
sent once per host by the data sync), and a run's working directory gets a copy, never a link
(``COPIED_PATTERNS``), so the script may write it again."""

DATA_PATTERNS = (
    "data/", "datasets/",
    "*.bin", "*.npy", "*.npz", "*.arrow", "*.parquet", "*.jsonl", "*.txt", "*.csv", "*.tsv",
    "*.pkl", "*.h5", "*.hdf5", "*.tfrecord",
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "merges.txt",
    "*.vocab", "*.spm",
)
"""What a script reads: sent as data by the data sync, whatever ``.gitignore`` says
(docs/data.md); a folder matching is data with everything in it."""


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


def _file_patterns(folder: Path, name: str) -> list[IgnorePattern]:
    ignore_file = folder / name
    if ignore_file.is_file() and not ignore_file.is_symlink():
        return _parsed(ignore_file.read_text(errors="replace").splitlines())
    return []


def _ignored(patterns: list[IgnorePattern], rel: PurePosixPath, is_dir: bool) -> bool:
    verdict = False
    for pattern in patterns:  # the last matching pattern decides, as in gitignore
        if pattern.matches(rel, is_dir):
            verdict = not pattern.negated
    return verdict


def _last_word(patterns: list[IgnorePattern], rel: PurePosixPath, is_dir: bool) -> bool | None:
    """True (left out) or False (sent again) by the last pattern matching; None: none does."""
    verdict = None
    for pattern in patterns:
        if pattern.matches(rel, is_dir):
            verdict = not pattern.negated
    return verdict


Kind = Literal["code", "data"]


@dataclass(frozen=True)
class FolderRules:
    """The rules that sort a folder's entries: the defaults, its ``.gitignore`` and its
    ``.corralignore``."""

    junk: list[IgnorePattern]
    """``DEFAULT_IGNORE``: what cannot matter to a run."""
    data: list[IgnorePattern]
    """``DATA_PATTERNS`` and ``OUTPUT_PATTERNS``."""
    git: list[IgnorePattern]
    """The folder's ``.gitignore``: what it leaves out travels as data."""
    own: list[IgnorePattern]
    """The folder's ``.corralignore``: the last word."""

    def kind(self, rel: PurePosixPath, is_dir: bool, *, is_package: bool = False,
             in_data: bool = False) -> Kind | None:
        """What travels of ``rel``: ``code``, ``data`` or None (stays home). ``in_data``: a
        folder above it is data; ``is_package``: a directory holding ``__init__.py``, which the
        defaults never leave out nor call data (a ``data`` package is code)."""
        data = in_data or (not is_package and _ignored(self.data, rel, is_dir))
        left_out = not is_package and _ignored(self.junk, rel, is_dir)
        last = _last_word(self.own, rel, is_dir)
        if last if last is not None else left_out:
            return None
        # What git leaves out still travels (torchrun shows it to the script): as data, so a
        # large prepared shard in a gitignored folder of any name is sent once per host.
        return "data" if data or _ignored(self.git, rel, is_dir) else "code"


    def own_says(self, rel: PurePosixPath, is_dir: bool) -> bool | None:
        """``.corralignore``'s last word on ``rel``: True leaves out, False sends, None: none."""
        return _last_word(self.own, rel, is_dir)

    def own_keeps_home(self, rel: PurePosixPath, is_dir: bool) -> bool:
        """Whether ``.corralignore`` (not a default) keeps ``rel`` home."""
        return self.own_says(rel, is_dir) is True


def folder_rules(folder: Path) -> FolderRules:
    """The rules of ``folder`` (its ignore files read once)."""
    return FolderRules(junk=_parsed(list(DEFAULT_IGNORE)),
                       data=_parsed(list(DATA_PATTERNS + OUTPUT_PATTERNS)),
                       git=_file_patterns(folder, GIT_IGNORE_FILE),
                       own=_file_patterns(folder, IGNORE_FILE))


def rules_for(rules: FolderRules, rel: PurePosixPath, is_dir: bool) -> list[str]:
    """Every pattern that leaves ``rel`` out, as written, with the file it is in
    (``tokens/ (.corralignore)``); empty when none does (or a later ``!`` line sends it)."""
    named = ((IGNORE_FILE, rules.own), ("corral's defaults", rules.junk))
    found: list[str] = []
    for name, patterns in named:
        for pattern in reversed(patterns):
            if pattern.matches(rel, is_dir):
                if pattern.negated:
                    return found  # sent again by this file: earlier patterns do not decide
                anchor = "/" if pattern.anchored else ""
                trail = "/" if pattern.directories_only else ""
                found.append(f"{anchor}{pattern.glob}{trail} ({name})")
    return found


def rule_for(rules: FolderRules, rel: PurePosixPath, is_dir: bool) -> str | None:
    """The last pattern that leaves ``rel`` out (``rules_for``'s first); None when none does."""
    found = rules_for(rules, rel, is_dir)
    return found[0] if found else None
