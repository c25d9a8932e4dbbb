"""Why a file the script could not read was not sent: every rule that left it out and the one
change that sends it.

A rank that fails on a path its launch folder holds read a file the push and the data sync
left at home. The error says so in many ways: ``FileNotFoundError`` quoting the path, an
``OSError`` naming a model folder (transformers: ``./model``), a glob loader's
``AssertionError`` or an ``IndexError`` on an empty file list naming a glob or nothing at all.
``explain_missing`` looks for every path (or glob) the failure names that the folder holds,
walks it from the folder down as ``remote.hosts.push_tree`` does and names each part left out:
by patterns (of ``.corralignore`` or corral's defaults), as a virtual environment, by ``[run]
data = false``, or as a link out of the folder. A failure of those kinds that names no such
path names what ``.corralignore`` kept home, as the likely cause.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path, PurePosixPath

from remote.hosts.push_ignore import IGNORE_FILE, FolderRules, folder_rules, rules_for
from remote.hosts.push_tree import VENV_MARKERS, mib, walk_tree

NOT_FOUND = re.compile(r"(?:FileNotFoundError|No such file or directory)[^']*'([^']+)'")
"""The path a ``FileNotFoundError`` names (Python's message quotes it)."""
QUOTED = re.compile(r"""['"`]([^'"`\n]{1,400})['"`]""")
BARE = re.compile(r"(?<![\w/.-])(\.{1,2}/[\w.*?\[\]-]+(?:/[\w.*?\[\]-]+)*|"
                  r"[\w.-]+(?:/[\w.*?\[\]-]+)+)")
"""Paths a message names without quotes (``./model``, ``tokens/*.npy``)."""
FILE_ERRORS = re.compile(r"\b(FileNotFoundError|OSError|IOError|AssertionError|IndexError|"
                         r"No such file or directory)\b")
"""The failures a file left home causes (a glob loader finding nothing asserts or indexes)."""


def _why_part(folder: Path, rules: FolderRules, part: PurePosixPath, is_dir: bool
              ) -> list[str]:
    """Every rule that leaves ``part`` out (a virtual environment counted as one)."""
    found = rules_for(rules, part, is_dir)
    if is_dir and not found and rules.own_says(part, is_dir) is None and any(
            (folder / part / marker).exists() for marker in VENV_MARKERS):
        found = ["a virtual environment (its pyvenv.cfg or conda-meta)"]
    return found


def _left_out_by(folder: Path, rel: PurePosixPath, data: bool | tuple[str, ...]) -> str | None:
    """Why ``rel`` (which ``folder`` holds) did not travel, with the one change that sends it;
    None if it did."""
    rules = folder_rules(folder)
    reasons: list[str] = []
    lines: list[str] = []
    in_data = False
    for depth in range(1, len(rel.parts) + 1):
        part = PurePosixPath(*rel.parts[:depth])
        path = folder / part
        if path.is_symlink() and not path.resolve().is_relative_to(folder.resolve()):
            return (f"{part} is a link to {path.resolve()}, outside the folder: corral never "
                    f"follows it; name it in [run] data (data = [\"{part}\"]) to send its files")
        is_dir = path.is_dir()
        is_package = is_dir and (path / "__init__.py").is_file()
        why = _why_part(folder, rules, part, is_dir)
        if why:
            reasons.append(f"{part} was left out by {' and '.join(why)}")
            lines.append(f"!/{part}{'/' if is_dir else ''}")
        kind = rules.kind(part, is_dir, is_package=is_package, in_data=in_data) or "data"
        if kind == "data" and data is False and not reasons:
            return (f"{part} is data and [run] data = false sends none; set data = true (or "
                    f"name it: data = [\"{part}\"])")
        in_data = kind == "data"
    if not reasons:
        return None
    said = " and ".join(lines)
    verb = "sends" if len(lines) == 1 else "send"
    where = "the line" if len(lines) == 1 else "the lines"
    return f"{'; '.join(reasons)}; {where} {said} in {folder / IGNORE_FILE} {verb} it"


def _named(text: str) -> list[str]:
    """The paths (and globs) ``text`` names, the ``FileNotFoundError``'s first."""
    found = [m.group(1) for m in NOT_FOUND.finditer(text)]
    found += [m.group(1) for m in QUOTED.finditer(text)]
    found += [m.group(1).rstrip(".") for m in BARE.finditer(text)]
    return list(dict.fromkeys(w.strip().rstrip("/") for w in found if w.strip()))


def _inside(folder: Path, written: str) -> list[PurePosixPath]:
    """What of ``folder`` the path or glob ``written`` names (relative, or absolute inside)."""
    path = os.path.normpath(written)
    root = str(folder.resolve())
    if os.path.isabs(path):
        if not (path == root or path.startswith(root + os.sep)):
            return []
        path = os.path.relpath(path, root)
    rel = PurePosixPath(path)
    if rel.parts[:1] == ("..",) or str(rel) == ".":
        return []
    if glob.has_magic(path):
        return [PurePosixPath(os.path.relpath(m, folder))
                for m in sorted(glob.glob(str(folder / path)))[:50]]
    return [rel] if os.path.lexists(folder / rel) else []


def _under(folder: Path, rel: PurePosixPath, data: bool | tuple[str, ...]) -> str | None:
    """Why ``rel``, or the first thing under it left home, did not travel."""
    why = _left_out_by(folder, rel, data)
    if why is not None or not (folder / rel).is_dir() or (folder / rel).is_symlink():
        return None if why is None else f"{rel} is in {folder} but did not travel: {why}"
    for home in walk_tree(folder).home:
        if PurePosixPath(home).is_relative_to(rel):
            return _under(folder, PurePosixPath(home), data)
    return None


def explain_missing(folder: Path, data: bool | tuple[str, ...], text: str) -> str | None:
    """For a failure's ``text`` naming a path (or a glob) that ``folder`` holds and that did
    not travel: one line saying what stayed home, every rule that left it out and the change
    that sends it. A file error naming none: what ``.corralignore`` kept home, if anything."""
    for written in _named(text):
        for rel in _inside(folder, written):
            if (said := _under(folder, rel, data)) is not None:
                return said
    if FILE_ERRORS.search(text) is None:
        return None
    home = walk_tree(folder).home
    if not home:
        return None
    shown = ", ".join(f"{rel} ({mib(size)})" for rel, size in list(home.items())[:5])
    lines = " and ".join(f"!/{rel}{'/' if (folder / rel).is_dir() else ''}" for rel in home)
    return (f"{shown} of {folder} stayed home by {folder / IGNORE_FILE}; if the script reads "
            f"it, {lines} at the end of that file sends it")
