"""A data script's failure on a host, in corral's words: the cause, never a bare traceback.

The host-side scripts (``remote.hosts.data_scripts``) report an uncaught error as one line,
``corral-error: {json}`` (``ERRORS_PY``: its type, errno, the file it names and its text);
``host_error`` turns that line, or failing it the last line of what the host said, into the
sentence ``corral run`` and ``corral check`` show: a full disk ("disk full on HOST at PATH",
``trainer.disk_full``'s words), a permission refused, a read-only file system, a file name
that is not UTF-8.
"""

from __future__ import annotations

import errno
import json

from trainer.disk_full import FULL_ERRNOS, disk_full_on

MARK = "corral-error: "
"""The start of the line a host-side data script writes for its uncaught error."""

ERRORS_PY = f"""
def _said(kind, value, tb):  # one line for the master to read: the cause, not a traceback
    path = getattr(value, "filename", None)
    sys.stderr.write({MARK!r} + json.dumps({{
        "type": kind.__name__, "errno": getattr(value, "errno", None),
        "path": path if isinstance(path, str) else None, "text": str(value)}}) + "\\n")


sys.excepthook = _said
"""
"""Installed first by each host-side data script (it needs ``json`` and ``sys``)."""

DENIED_ERRNOS = (errno.EACCES, errno.EPERM)


def host_error(host: str, said: str, where: str) -> str:
    """corral's sentence for what a host-side data script said on stderr (``said``) as it
    failed; ``where``: the place it was writing to (the host's data cache), named when the
    error names no file."""
    for line in reversed(said.splitlines()):
        if line.startswith(MARK):
            try:
                found = json.loads(line[len(MARK):])
            except ValueError:
                break
            if isinstance(found, dict):
                return _sentence(host, found, where)
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "it ended without a word"


def _sentence(host: str, found: dict[str, object], where: str) -> str:
    number, kind, text = found.get("errno"), str(found.get("type")), str(found.get("text"))
    named = found.get("path")
    path = named if isinstance(named, str) else where
    if number in FULL_ERRNOS:
        return (f"{disk_full_on(host, path)}: the data did not fit; free space there, or leave "
                "some data out with a line in .corralignore")
    if number in DENIED_ERRNOS:
        return (f"permission denied on {host} at {path}: its SSH user cannot write there; "
                "make it writable, or set the host's workdir to a folder it owns")
    if number == errno.EROFS:
        return (f"{path} on {host} is on a read-only file system: set the host's workdir to a "
                "writable folder")
    if kind in ("UnicodeEncodeError", "UnicodeDecodeError"):
        return (f"a data file's name is not UTF-8, which {host} cannot take: rename it, or "
                "leave it out with a line in .corralignore")
    return f"{kind}: {text}"[-300:]
