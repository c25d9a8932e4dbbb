"""User tasks: a Python file with ``def build(options: dict) -> Task``.

The file is imported under its own module name with its directory on ``sys.path`` (so it can
import its neighbours, which corral pushes with it). Every mistake in it — a syntax error, a
missing function, an exception inside ``build``, a result that is not a ``Task`` — becomes one
``UsageError`` naming the file and line, raised before the rank joins the process group.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any

from profiles.user_errors import UsageError


def load_builder(path: Path, function: str) -> Any:
    """Import ``path`` and return its ``function`` (UsageError naming file and line)."""
    if not path.is_file():
        raise UsageError(f"task file {path} does not exist")
    name = f"corral_task_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"task file {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise UsageError(f"{exc.filename or path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        raise UsageError(f"importing {path} failed: {describe_exception(exc, path)}") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        found = sorted(n for n, v in vars(module).items()
                       if callable(v) and not n.startswith("_") and
                       getattr(v, "__module__", None) == name)
        hint = f" (it defines {', '.join(found)})" if found else ""
        raise UsageError(f"task file {path} has no function {function}(options){hint}")
    return builder


def describe_exception(exc: BaseException, path: Path) -> str:
    """``FILE:LINE: Type: message`` at the innermost frame in the user's folder (else the
    innermost frame of all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    folder = path.resolve().parent
    mine = [f for f in frames if Path(f.filename).resolve().is_relative_to(folder)]
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    if not (mine or frames):
        return text
    where = (mine or frames)[-1]
    return f"{where.filename}:{where.lineno}: {text}"
