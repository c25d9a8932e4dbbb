"""Why a file the script could not open was not sent: the rule that left it out and the line
that would send it.

A rank that fails with ``FileNotFoundError`` on a relative path its launch folder holds read
a file the push and the data sync left at home. ``explain_missing`` walks the path from the
folder down as ``remote.hosts.push_tree`` does and names the first part left out: by a
pattern (of ``.corralignore``, corral's defaults, or ``.gitignore``), by ``[run] data =
false``, or as a link out of the folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from remote.hosts.push_ignore import IGNORE_FILE, folder_rules, rule_for

NOT_FOUND = re.compile(r"(?:FileNotFoundError|No such file or directory)[^']*'([^']+)'")
"""The path a ``FileNotFoundError`` names (Python's message quotes it)."""


def _left_out_by(folder: Path, rel: PurePosixPath, data: bool | tuple[str, ...]) -> str | None:
    """Why ``rel`` (which ``folder`` holds) did not travel, with the fix; None if it did."""
    rules = folder_rules(folder)
    in_data = False
    for depth in range(1, len(rel.parts) + 1):
        part = PurePosixPath(*rel.parts[:depth])
        path = folder / part
        if path.is_symlink() and not path.resolve().is_relative_to(folder.resolve()):
            return (f"{part} is a link to {path.resolve()}, outside the folder: corral never "
                    f"follows it; name it in [run] data (data = [\"{part}\"]) to send its files")
        is_dir = path.is_dir()
        is_package = is_dir and (path / "__init__.py").is_file()
        kind = rules.kind(part, is_dir, is_package=is_package, in_data=in_data)
        if kind is None:
            rule = rule_for(rules, part, is_dir) or "a pattern"
            line = f"!/{part}{'/' if is_dir else ''}"
            return (f"{part} was left out by {rule}; the line {line} in {folder / IGNORE_FILE} "
                    "sends it")
        if kind == "data" and data is False:
            return (f"{part} is data and [run] data = false sends none; set data = true (or "
                    f"name it: data = [\"{part}\"])")
        in_data = kind == "data"
    return None


def explain_missing(folder: Path, data: bool | tuple[str, ...], text: str) -> str | None:
    """For a failure's ``text`` naming a ``FileNotFoundError`` on a relative path that
    ``folder`` holds: one line saying what left it out and the line that sends it."""
    match = NOT_FOUND.search(text)
    if match is None or os.path.isabs(match.group(1)):
        return None
    rel = PurePosixPath(os.path.normpath(match.group(1)))
    if rel.parts[:1] == ("..",) or not os.path.lexists(folder / rel):
        return None
    why = _left_out_by(folder, rel, data)
    if why is None:
        return None
    return f"{match.group(1)} is in {folder} but did not travel: {why}"
