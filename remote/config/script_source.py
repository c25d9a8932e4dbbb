"""What corral reads from a user's script on this machine before anything starts.

A script that does not parse would fail on every host after the push and the rendezvous; it is
named here, with its line. Every module it imports, anywhere in the file (at its top level,
inside ``if`` and ``try`` blocks, and inside functions: TRL's ``sft.py`` imports its packages
in ``main()``), is what the pre-flight asks every host's Python to find
(``remote.checks.script_imports``); a static scan, so nothing of the script runs here. Modules
of the user's own folder, pushed with the script, are left out.
"""

from __future__ import annotations

import ast
import sys
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


def _imported_names(tree: ast.Module) -> list[str]:
    """The first part of every absolute module the file imports anywhere, in order."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return list(dict.fromkeys(names))


def _own_module(folder: Path, name: str) -> bool:
    return (folder / f"{name}.py").is_file() or (folder / name).is_dir()


def imported_packages(source: Path, folder: Path) -> tuple[str, ...]:
    """Top-level package names the script imports anywhere in the file that its pushed
    ``folder`` does not hold (the standard library is left out, and corral's own ``trainer``
    travels with every push)."""
    try:
        tree = _parse(source)
    except (SyntaxError, OSError, ValueError):
        return ()  # named by syntax_problem
    own = {"trainer", "profiles", *sys.stdlib_module_names}
    return tuple(n for n in _imported_names(tree)
                 if n not in own and not _own_module(folder, n) and n != source.stem)
