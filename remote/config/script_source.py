"""What corral reads from a user's script on this machine before anything starts.

A script that does not parse would fail on every host after the push and the rendezvous; it is
named here, with its line. What it imports is read by ``remote.checks.import_scan``.
"""

from __future__ import annotations

import ast
from pathlib import Path


def _parse(source: Path) -> ast.Module:
    return ast.parse(source.read_bytes(), filename=str(source))


def syntax_problem(source: Path) -> str | None:
    """``"FILE:LINE: ..."`` when the script at ``source`` does not parse or cannot be read."""
    try:
        _parse(source)
    except SyntaxError as exc:
        return (f"{source}:{exc.lineno}: syntax error: {exc.msg}; fix the script (python "
                f"{source.name} shows the same)")
    except (OSError, ValueError) as exc:
        return f"{source} cannot be read: {exc}"
    return None
