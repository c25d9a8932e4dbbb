"""Run files on this machine are the run's user's alone: directories 0700, files 0600.

A run's record, its copied logs and events can hold what the user would not show other local
users (paths, hosts, a task's output); the same modes as the hosts' run directories get from
the launcher's ``umask 077``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> None:
    """Make ``path`` (and missing parents, which ``mkdir`` would make with the umask's modes)
    as a directory only its owner can enter."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True, mode=DIR_MODE)
    if path.stat().st_mode & 0o077:
        path.chmod(DIR_MODE)


def open_private(path: Path, mode: str = "ab") -> IO[bytes]:
    """``open(path, mode)`` for a binary append or write, creating the file 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, FILE_MODE), mode)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to a new or truncated file created 0600."""
    with open_private(path, "wb") as handle:
        handle.write(text.encode("utf-8"))
