"""The house rules a reader relies on: small modules, short functions (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("console", "remote", "trainer", "profiles")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_function_is_over_60_lines() -> None:
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{node.name}"] = lines
    assert long == {}


def test_the_rules_cover_the_pushed_and_the_front_end_packages() -> None:
    # A package renamed or emptied would make the checks above pass vacuously.
    counts = {package: len(list((REPO / package).rglob("*.py"))) for package in PACKAGES}
    assert all(count >= 5 for count in counts.values()), counts


def _public_type_names(path: Path) -> list[str]:
    """The classes and type names a module defines at its top level (CamelCase, public)."""
    names: list[str] = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [n for n in names if n[:1].isupper() and not n.isupper()]


def test_each_public_type_name_has_one_meaning_across_the_packages() -> None:
    """A name such as ``Outcome`` or ``DiskFull`` is defined in one module: the others import
    it, so a reader who knows the name knows the thing."""
    where: dict[str, list[str]] = {}
    for path in _modules():
        for name in _public_type_names(path):
            where.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
