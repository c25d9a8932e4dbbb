"""The house rules a reader relies on: modules under 400 lines, functions under 60, in the
packages, the benches and the tests alike (docs/architecture.md); one meaning per type name."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("console", "remote", "figures", "trainer", "profiles")
"""The five packages: the type-name rule holds across them."""
HOUSE = (*PACKAGES, "bench", "tests")
"""Where the size rules hold: the packages, the benches and the tests."""
MODULE_LINES_LIMIT = 400
"""A module has fewer lines than this."""
FUNCTION_LINES_LIMIT = 60
"""A function has fewer lines than this (its ``def`` to its last line)."""


def _modules(packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py"))


LONG_MODULES_FROM = 350
"""From this many lines, a module is split where its meaning divides, or named in
``ONE_THING`` with the reason it is one thing (a line count is a smell, not a rule to shave
code under: docs/architecture.md "Sizes")."""
ONE_THING = {
    "trainer/membership/members.py": "one rank's side of a membership change, agreed in one "
                                     "store protocol: its flags, rank 0's plan, the admission",
    "trainer/exact_loop.py": "the exact loop, read top to bottom as train.py's steps 3 to 6",
    "trainer/lowcomm/rounds.py": "the low-communication loop, read top to bottom like the "
                                 "exact one",
    "trainer/balance/balancer.py": "rank 0's balancer: its measurements and its decisions over "
                                   "one state",
    "remote/run/handle.py": "one run's lifecycle loop and the one place its actions are "
                           "performed",
    "remote/run/follower.py": "the running phase of one attempt: the merged tails and the facts "
                             "they give",
    "remote/run/monitor.py": "how an attempt ends, decided from every host's report",
    "remote/api.py": "the face of remote/: re-exports and thin entry points only",
    "remote/records/runs.py": "run ids, run.json and the local registry: one record's format",
    "remote/hosts/ssh.py": "the asyncssh transport: one verified connection per host",
    "remote/hosts/data_sender.py": "one host's data stream, whole files or a recipe's chunks, "
                                   "from its own sender process",
    "remote/checks/preflight.py": "one probe command per host and the judging of its answer",
    "console/app.py": "the Textual app: its bindings and their routing, nothing else",
    "console/model/run.py": "the run model: the one reducer of a run's stream",
    "console/controls.py": "the console's run controls, each a call to remote as work",
    "console/widgets/logs.py": "the logs panel: its buffer, filter and search",
    "bench/membership.py": "one benchmark: live membership against the restart path",
    "bench/lowcomm.py": "one benchmark: the low-communication mode against exact",
    "tests/remote/test_decide.py": "the decider's rows, one table per signal family",
    "tests/remote/test_config_cluster.py": "cluster.toml's sections, one test per rule",
    "tests/remote/scenarios/test_reliability_sshd.py":
        "one module-scoped set of sshd hosts, faults checked many ways",
    "tests/remote/test_data_sync.py": "the data sync's cases over one local host set",
    "tests/remote/scenarios/test_script_run_local.py":
        "the script front door's runs as one table, each launched once and checked many ways",
    "tests/trainer/test_balancer.py": "the balancer's policies against simulated clusters",
}
"""Modules of ``LONG_MODULES_FROM`` lines or more that are one thing, each with why."""


def test_a_long_module_is_split_or_named_as_one_thing() -> None:
    long = {str(p.relative_to(REPO)) for p in _modules(HOUSE)
            if len(p.read_text().splitlines()) >= LONG_MODULES_FROM}
    assert long - ONE_THING.keys() == set(), "split these where their meaning divides, or " \
        "name them in ONE_THING with the reason each is one thing"
    # An entry whose module shrank well below the mark (or is gone) leaves the list.
    stale = {name for name in ONE_THING if not (REPO / name).is_file()
             or len((REPO / name).read_text().splitlines()) < LONG_MODULES_FROM - 50}
    assert stale == set()


def test_every_module_is_under_400_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in _modules(HOUSE)
            if (n := len(p.read_text().splitlines())) >= MODULE_LINES_LIMIT}
    assert long == {}


def test_every_function_is_under_60_lines() -> None:
    long = {}
    for path in _modules(HOUSE):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines >= FUNCTION_LINES_LIMIT:
                    long[f"{path.relative_to(REPO)}:{node.name}"] = lines
    assert long == {}


def test_the_rules_cover_every_folder_they_name() -> None:
    # A package renamed or emptied would make the checks above pass vacuously.
    counts = {package: len(list((REPO / package).rglob("*.py"))) for package in HOUSE}
    assert all(count >= 4 for count in counts.values()), counts  # figures/ holds 4


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


def test_docs_name_every_module_and_no_module_that_is_gone() -> None:
    """docs/architecture.md and the pages it points to for the modules (docs/modules.md,
    docs/remote.md) tell a newcomer where each kind of code is: every module is named there, as
    `name.py`, and every module named there exists."""
    docs = "".join((REPO / "docs" / name).read_text()
                   for name in ("architecture.md", "modules.md", "remote.md"))
    modules = [p for p in _modules() if p.name != "__init__.py"]
    unnamed = [str(p.relative_to(REPO)) for p in modules if f"{p.name}`" not in docs]
    assert unnamed == []
    everywhere = {p.name for folder in (*HOUSE, "examples", "scripts")
                  for p in (REPO / folder).rglob("*.py")}
    named = {name.rsplit("/", 1)[-1] for name in re.findall(r"`([\w/]+\.py)`", docs)}
    assert named - everywhere == set()


def test_the_architecture_page_counts_the_packages_and_layers_the_contracts_hold() -> None:
    """docs/architecture.md's opening sentence and its layer diagram say what pyproject.toml's
    top contract holds: as many packages as layers, in the contract's order."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    top = next(c for c in contracts["contracts"] if c["type"] == "layers"
               and "containers" not in c and set(c["layers"]) == set(PACKAGES))
    words = {3: "three", 4: "four", 5: "five", 6: "six"}
    page = (REPO / "docs" / "architecture.md").read_text()
    n = words[len(top["layers"])]
    assert f"corral is {n} packages in {n} layers" in page
    assert " -> ".join(top["layers"]) in page
