"""What a user's script needs from each host's Python, read statically on this machine.

The script is parsed (nothing of it runs), and so is every module of the user's own tree it
imports, and what those import, in turn: a module is the tree's own when the pushed folder holds
it at its top or one or two folders down (``src/training/`` of a ``src/`` layout whose script
puts ``src/`` on ``sys.path``). Every other module, the standard library aside, is a package
the hosts must provide, and each use is sorted:

- **required**: imported unconditionally, at a module's top level (or under
  ``if __name__ == "__main__":``), by the script or by a module it requires;
- **optional**, with why: under ``try:`` whose ``except`` catches ``ImportError`` (or any
  ``Exception``), behind a condition (``if wandb_log: import wandb``), or inside a function (it
  may never be called); and whatever a module imported only optionally imports.

A module the user's folder on this machine has but does not push (left out by an ignore rule,
or outside the pushed folder: a sibling ``src/``) is *not pushed*; the fix is ``[run] code`` or
the ignore file, never a pip install. A folder of installed distributions (``site-packages``,
``dist-packages``, any folder holding ``*.dist-info``: a venv's, a ``pip install --target``)
is never the user's tree, whatever folder the script lies in: TRL's ``sft.py`` as the ``trl``
package ships it imports ``transformers`` from beside it, which each host installs itself.
"""

from __future__ import annotations

import ast
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from remote.hosts.push_tree import walk_tree
from trainer.integrations.user_modules import CORRAL_PACKAGES, HELPERS, HELPERS_OF

MAX_FILES = 400
"""The most files of the user's tree one scan parses (a large tree is scanned this far)."""
LOCAL_DEPTH = 2
"""How many folders down the pushed folder a top-level module of the user's may lie."""
INSTALLED_DIRS = frozenset({"site-packages", "dist-packages"})
"""Folder names of installed distributions (pip's, a venv's, Debian's): never the user's tree."""
CATCHES_IMPORTS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})

IN_FUNCTION = "inside a function"
UNDER_TRY = "under try/except ImportError"
CONDITIONAL = "behind a condition"


@dataclass(frozen=True, kw_only=True)
class ImportUse:
    """One top-level module a script needs from the hosts."""

    name: str
    optional: str | None
    """Why it may never be imported (``UNDER_TRY``...); None: imported unconditionally."""
    where: str
    """``FILE:LINE`` (relative to the pushed folder) of the use that decided ``optional``."""


@dataclass(frozen=True, kw_only=True)
class ScriptNeeds:
    """What a scan found."""

    packages: tuple[ImportUse, ...] = ()
    not_pushed: dict[str, Path] = field(default_factory=dict)
    """A module of the user's found on this machine but not in the pushed folder → where."""
    collisions: tuple[str, ...] = ()
    """Messages: a name the script means as corral's that its own tree takes."""


def _catches_import_errors(node: ast.Try | ast.TryStar) -> bool:
    for handler in node.handlers:
        if handler.type is None:
            return True
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        for caught in types:
            name = (caught.id if isinstance(caught, ast.Name)
                    else caught.attr if isinstance(caught, ast.Attribute) else "")
            if name in CATCHES_IMPORTS:
                return True
    return False


def _main_guard(test: ast.expr) -> bool:
    """``__name__ == "__main__"``: the script's own main path, not a condition."""
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def module_imports(tree: ast.AST) -> list[tuple[str, int, str | None]]:
    """``(absolute module, line, why optional or None)`` of every import in ``tree``."""
    found: list[tuple[str, int, str | None]] = []

    def visit(node: ast.AST, why: str | None) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno, why) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.append((node.module, node.lineno, why))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for child in ast.iter_child_nodes(node):
                visit(child, why or IN_FUNCTION)
        elif isinstance(node, ast.Try | ast.TryStar):
            inner = why or (UNDER_TRY if _catches_import_errors(node) else None)
            for child in node.body:
                visit(child, inner)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, why)
        elif isinstance(node, ast.If) and not _main_guard(node.test):
            for child in [*node.body, *node.orelse]:
                visit(child, why or CONDITIONAL)
        else:
            for child in ast.iter_child_nodes(node):
                visit(child, why)

    visit(tree, None)
    return found


def _local_index(files: list[str]) -> dict[str, list[str]]:
    """Top-level module name → the pushed ``.py`` files of it, for every module or package
    at most ``LOCAL_DEPTH`` folders down."""
    index: dict[str, list[str]] = {}
    for rel in files:
        parts = PurePosixPath(rel).parts
        if not rel.endswith(".py"):
            continue
        for depth in range(min(LOCAL_DEPTH, len(parts) - 1) + 1):
            name = parts[depth]
            name = name[:-3] if depth == len(parts) - 1 else name
            if name.isidentifier():
                index.setdefault(name, []).append(rel)
    return index


@functools.lru_cache(maxsize=64)
def _installed(base: Path) -> bool:
    """Whether ``base`` holds installed distributions rather than the user's own modules: by
    its name, or by the metadata pip writes beside every distribution it installs."""
    if base.name in INSTALLED_DIRS:
        return True
    try:
        return any(entry.suffix in (".dist-info", ".egg-info") for entry in base.iterdir())
    except OSError:
        return False


def _elsewhere(name: str, folder: Path) -> Path | None:
    """Where this machine has the user's module ``name`` that the push leaves out (a module
    beside installed distributions is one of them: each host has its own)."""
    bases = [folder, folder.parent, folder.parent.parent]
    for base in [*bases, *(b / "src" for b in bases)]:
        if _installed(base):
            continue
        for candidate in (base / f"{name}.py", base / name / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _stronger(old: ImportUse | None, new: ImportUse) -> bool:
    return old is None or (old.optional is not None and new.optional is None)


def _dotted(rel: str, top: str) -> str:
    """The module name of the pushed file ``rel`` that lies in the user's ``top``."""
    parts = list(PurePosixPath(rel).with_suffix("").parts)
    parts = parts[parts.index(top):]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files_of(module: str, files: list[str]) -> list[str]:
    """The files an import of ``module`` runs: its packages' ``__init__`` and itself (or its
    submodules one level down, as ``from pkg import sub`` may name them)."""
    top = module.partition(".")[0]
    chosen = []
    for rel in files:
        name = _dotted(rel, top)
        if (module == name or module.startswith(name + ".")
                or (name.startswith(module + ".") and name.count(".") == module.count(".") + 1)):
            chosen.append(rel)
    return chosen


def _collision(module: str, index: dict[str, list[str]], where: str) -> str | None:
    """A message when ``module`` means corral's opt-in but the user's tree takes its name."""
    top, _, rest = module.partition(".")
    if top in CORRAL_PACKAGES and module.startswith(HELPERS_OF + ".") and top in index:
        helper = module[len(HELPERS_OF) + 1:]
        return (f"{where} imports {module} (corral's opt-in), but your folder's own {top} "
                f"({index[top][0]}) takes that name; import it as {HELPERS}.{helper}")
    if top == HELPERS and rest and top in index and not _files_of(module, index[top]):
        return (f"{where} imports {module} (corral's opt-in), but your folder's own {top} "
                f"({index[top][0]}) takes that name; rename it, or import "
                f"{HELPERS_OF}.{rest}")
    return None


def scan(source: Path, folder: Path) -> ScriptNeeds:
    """What the script ``source`` (inside the pushed ``folder``) and the modules of its own tree
    it imports need from the hosts (see the module's docstring)."""
    files = list(walk_tree(folder).files)
    index = _local_index(files)
    uses: dict[str, ImportUse] = {}
    not_pushed: dict[str, Path] = {}
    collisions: list[str] = []
    scanned: dict[str, str | None] = {}
    pending: list[tuple[str, str | None]] = [(source.relative_to(folder).as_posix(), None)]
    while pending and len(scanned) < MAX_FILES:
        rel, why = pending.pop()
        if rel in scanned and (scanned[rel] is None or why is not None):
            continue  # scanned already, as required or as optional as now
        scanned[rel] = why
        try:
            tree = ast.parse((folder / rel).read_bytes(), filename=rel)
        except (SyntaxError, OSError, ValueError):
            continue  # the script's own: syntax_problem names it; a module's: its own error
        for module, line, own_why in module_imports(tree):
            top, where, reason = module.partition(".")[0], f"{rel}:{line}", own_why or why
            if (problem := _collision(module, index, where)) is not None:
                collisions.append(problem)
            if top in index:
                pending += [(f, reason) for f in _files_of(module, index[top])]
            elif top in sys.stdlib_module_names or top in (*CORRAL_PACKAGES, HELPERS):
                continue  # Python's own, or corral's (pushed with the code)
            elif (place := _elsewhere(top, folder)) is not None:
                not_pushed.setdefault(top, place)
            elif _stronger(uses.get(top), use := ImportUse(name=top, optional=reason,
                                                             where=where)):
                uses[top] = use
    return ScriptNeeds(packages=tuple(uses.values()), not_pushed=not_pushed,
                       collisions=tuple(dict.fromkeys(collisions)))
