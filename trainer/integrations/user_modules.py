"""The user's modules win: corral's rank-side packages step out of the script's way.

A script rank starts as ``python -m trainer.integrations.script_main``, so corral's ``trainer``
and ``profiles`` packages are imported before the script's first line, under names a user's own
module may have (``trainer.py`` beside a DDP example is common). ``step_aside`` runs just
before the script, once everything corral needs during it is imported:

- corral's code folder moves to the end of ``sys.path``, and every ``trainer*``/``profiles*``
  entry leaves ``sys.modules`` (kept in ``CorralModules.own``): the script's ``import trainer``
  finds its own;
- ``CorralModules``, first on ``sys.meta_path``, serves corral's modules only for names the
  user's tree does not hold: the old opt-in ``from trainer.integrations.hf import corral`` keeps
  working without a user ``trainer``, and ``corral.<name>`` is always
  ``trainer.integrations.<name>`` (``from corral.hf import corral``, ``from corral.ddp import
  Shares``), a name no user module of the script's takes unless it is called ``corral``;
- an import statement in corral's own code (a lazy one inside a function, a module corral
  loads for the script) resolves ``trainer``/``profiles`` to corral's, never to the user's.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

CORRAL_PACKAGES = ("trainer", "profiles")
"""corral's top-level packages on a rank."""
HELPERS = "corral"
"""The name the opt-in helpers are importable under: ``corral.X`` is ``trainer.integrations.X``."""
HELPERS_OF = "trainer.integrations"


def _top(name: str) -> str:
    return name.partition(".")[0]


def _installed_roots() -> tuple[str, ...]:
    """Where installed packages live: a corral installed there is not the user's module."""
    import site

    roots = {sys.prefix, sys.base_prefix, *site.getsitepackages()}
    with contextlib.suppress(AttributeError):
        roots.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.abspath(r), "") for r in roots if r)


def _user_spec(name: str, root: str) -> importlib.machinery.ModuleSpec | None:
    """What the import path finds for a top-level ``name`` outside corral's folder ``root``
    when it is the user's (not installed); None otherwise. corral's folder is left out of the
    search: its regular ``trainer`` package would otherwise hide a user's namespace package of
    that name (a folder without ``__init__.py`` that the script puts on ``sys.path``)."""
    path = [p for p in sys.path if os.path.abspath(p or ".") != root]
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None:
        return None
    where = spec.origin or next(iter(spec.submodule_search_locations or []), "")
    if os.path.abspath(where).startswith((*_installed_roots(), os.path.join(root, ""))):
        return None
    if _in_a_corral_tree(where):
        return None
    return spec


def _in_a_corral_tree(where: str) -> bool:
    """Whether the module at ``where`` (a file, or a package's folder) belongs to a copy of
    corral: a clone or an editable install's folder on the host's ``PYTHONPATH``. Taken for
    the user's, its ``trainer`` would be a second corral beside the one the rank runs: the
    opt-in's events and the plain script's both written, every step counted twice."""
    top = os.path.dirname(os.path.abspath(where))
    if os.path.basename(where) == "__init__.py":
        top = os.path.dirname(top)
    return os.path.isfile(os.path.join(top, "trainer", "integrations", "user_modules.py"))


class _Existing(importlib.abc.Loader):
    """A loader that hands over a module already loaded."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module = module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return self.module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class CorralModules(importlib.abc.MetaPathFinder):
    """corral's modules, out of ``sys.modules``, served where the user's tree has no module."""

    def __init__(self, root: str, own: dict[str, types.ModuleType]) -> None:
        self.root = root
        """The folder holding corral's ``trainer`` and ``profiles`` packages."""
        self.own = own
        self.prefixes = tuple(os.path.join(root, p) + os.sep for p in CORRAL_PACKAGES)
        self.lock = threading.RLock()
        self.depth = 0
        self.inside = threading.local()
        """``inside.on``: this thread imports among corral's names (the finder stands aside)."""
        self.helpers = types.ModuleType(HELPERS, "corral's opt-in helpers: corral.hf, corral.ddp")
        self.helpers.__path__ = []

    def is_corrals(self, file: object) -> bool:
        """Whether ``file`` (a module's ``__file__``) is one of corral's."""
        return isinstance(file, str) and file.startswith(self.prefixes)

    @contextmanager
    def corral_names(self) -> Iterator[None]:
        """``trainer``/``profiles`` mean corral's for the duration (re-entrant)."""
        with self.lock:
            self.depth += 1
            if self.depth > 1:
                try:
                    yield
                finally:
                    self.depth -= 1
                return
            users = {n: sys.modules.pop(n) for n in list(sys.modules)
                     if _top(n) in CORRAL_PACKAGES}
            sys.modules.update(self.own)
            sys.path.insert(0, self.root)
            self.inside.on = True
            try:
                yield
            finally:
                self.inside.on = False
                sys.path.remove(self.root)
                for name in [n for n in sys.modules if _top(n) in CORRAL_PACKAGES]:
                    self.own[name] = sys.modules.pop(name)
                sys.modules.update(users)
                self.depth -= 1

    def corral_module(self, name: str) -> types.ModuleType:
        """corral's module ``name``, imported among corral's own names."""
        if name in self.own:
            return self.own[name]
        with self.corral_names():
            importlib.import_module(name)
        return self.own[name]

    def _spec(self, name: str, module: types.ModuleType) -> importlib.machinery.ModuleSpec:
        spec = importlib.machinery.ModuleSpec(name, _Existing(module),
                                              is_package=hasattr(module, "__path__"))
        spec.has_location = False
        return spec

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if getattr(self.inside, "on", False):
            return None  # corral's own import: the path finders find corral's modules
        top = _top(fullname)
        if top == HELPERS:
            if fullname == HELPERS:
                if _user_spec(HELPERS, self.root) is not None:
                    return None
                return self._spec(HELPERS, self.helpers)
            if sys.modules.get(HELPERS) is not self.helpers:
                return None
            name = HELPERS_OF + fullname[len(HELPERS):]
            return self._spec(fullname, self.corral_module(name))
        if top not in CORRAL_PACKAGES:
            return None
        if path is None:
            users = _user_spec(fullname, self.root)
            if users is not None:  # a top-level name the user's tree has: the user's
                return users
        elif not any(self.is_corrals(os.path.join(p, "")) for p in path):
            return None  # a submodule of the user's package
        try:
            return self._spec(fullname, self.corral_module(fullname))
        except ImportError:
            return None

    def importer(self, original: Any) -> Any:
        """``builtins.__import__`` for which corral's own code always finds corral's names."""

        def corral_import(name: str, globals: Any = None, locals: Any = None,
                          fromlist: Any = (), level: int = 0) -> Any:
            if (globals is not None and (level > 0 or _top(name) in CORRAL_PACKAGES)
                    and self.is_corrals(globals.get("__file__"))):
                with self.corral_names():
                    return original(name, globals, locals, fromlist, level)
            return original(name, globals, locals, fromlist, level)

        return corral_import


def step_aside() -> CorralModules:
    """Take corral's packages out of the script's way (see the module's docstring)."""
    import trainer

    root = os.path.dirname(os.path.dirname(os.path.abspath(trainer.__file__)))
    own = {n: sys.modules.pop(n) for n in list(sys.modules) if _top(n) in CORRAL_PACKAGES}
    # Last on the path, not gone: a worker process the script spawns unpickles corral's objects
    # (the DDP helper's sampler) by their module names, and finds them there.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != root] + [root]
    modules = CorralModules(root, own)
    sys.meta_path.insert(0, modules)
    builtins.__import__ = modules.importer(builtins.__import__)
    return modules
