"""Pre-flight check that every host's Python finds the packages a user's script imports.

The names come from the script and the modules of its own tree, read on this machine
(``remote.checks.import_scan``: required or optional, each use sorted). Each host's Python is
asked ``importlib.util.find_spec`` for each: nothing is imported, so the probe costs little. A
required package missing fails the check (only warns with ``[run] imports_check = "warn"``),
named with the host, the interpreter that answered and the pip line naming the distribution
(``remote.checks.distributions``); an optional one missing is a warning; a module of the user's
own that is not pushed names the ``[run] code`` fix, never a pip install.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING

from remote.checks.distributions import distribution, torch_index_note
from remote.checks.import_scan import ScriptNeeds, scan
from remote.checks.task_packages import pip_line
from remote.config.script_keys import ignored_keys_line
from remote.config.task_code import UserCode
from remote.events import CheckItem
from remote.hosts.data_tree import data_line
from remote.hosts.interpreter import last_json, python_c, python_label
from remote.hosts.push_tree import budget_problem, home_line, left_out_line, walk_tree

if TYPE_CHECKING:
    from remote.config.cluster import ClusterConfig, HostSection

FIND_SPECS_PY = """\
import importlib.util, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found[name] = False
print(json.dumps(found))
"""


SCAN_KEPT_S = 30.0
"""How long one scan of a script's tree answers for (one check asks it for every host)."""


@functools.lru_cache(maxsize=8)
def _scanned(source: Path, folder: Path, stamp: int, era: int) -> ScriptNeeds:
    return scan(source, folder)


def script_needs(config: ClusterConfig, user: UserCode | None) -> ScriptNeeds:
    """What the run's script needs from its hosts (nothing without a script); ``user`` is
    the run's user code (``user_code``, located once by the check's caller)."""
    code = user if config.run.script else None
    if code is None or not code.source.is_file():
        return ScriptNeeds()
    return _scanned(code.source, code.folder, code.source.stat().st_mtime_ns,
                    int(time.monotonic() // SCAN_KEPT_S))


def script_packages(config: ClusterConfig, user: UserCode | None) -> tuple[str, ...]:
    """The modules the run's script needs from its hosts, required and optional."""
    return tuple(use.name for use in script_needs(config, user).packages)


def imports_probe(host: HostSection, config: ClusterConfig, user: UserCode | None) -> str | None:
    """The shell command of the imports probe, or None when there is nothing to ask."""
    names = script_packages(config, user)
    return f"{python_c(host, FIND_SPECS_PY, *names)} 2>&1" if names else None


def _own_items(host: HostSection, code: UserCode | None, needs: ScriptNeeds) -> list[CheckItem]:
    """The user's own modules that are not pushed, and names corral's opt-in cannot take."""
    items = [CheckItem(host=host.name, name="imports", ok=False, detail=problem,
                       hint="see docs/scripts.md, from torchrun to corral")
             for problem in needs.collisions]
    if needs.not_pushed:
        assert code is not None
        named = ", ".join(f"{n} ({p})" for n, p in needs.not_pushed.items())
        items.append(CheckItem(
            host=host.name, name="imports", ok=False,
            detail=f"{code.source.name} imports your own {named}, not pushed: the pushed folder "
                   f"is {code.folder}",
            hint="set [run] code to a folder holding the script and these (the repository's "
                 "root), or leave them out of .gitignore/.corralignore"))
    return items


def judge_imports(host: HostSection, config: ClusterConfig, user: UserCode | None, output: str,
                  status: int) -> list[CheckItem]:
    """The ``imports`` items: required packages found (or not), optional ones missing as a
    warning, and the user's own modules that would not reach the host (``user``: the run's
    user code)."""
    needs = script_needs(config, user)
    items = _own_items(host, user, needs)
    if not needs.packages:
        return items
    python = f"{python_label(host)} on {host.name}"
    found = last_json(output) if status == 0 else None
    if found is None:  # the interpreter did not run (its own row says why): nothing is known
        items.append(CheckItem(
            host=host.name, name="imports", ok=False,
            detail=f"not checked: {python} did not run the scan of the script's imports "
                   f"(status {status})",
            hint="fix this host's python first (its row above)"))
        return items
    required = [u for u in needs.packages if u.optional is None and not found.get(u.name)]
    optional = [u for u in needs.packages if u.optional is not None and not found.get(u.name)]
    if optional:  # no host in the detail: the run logs the same warning once for every host
        items.append(CheckItem(
            host=host.name, name="imports", ok=True,
            detail=f"warning: optional, not found by {python_label(host)}: " + "; ".join(
                f"{u.name} ({u.optional}, {u.where})" for u in optional),
            hint=f"only if the script takes that path: on {host.name}: "
                 f"{_install(host, [u.name for u in optional])}"))
    if not required:
        wanted = len(needs.packages) - len(optional)
        items.append(CheckItem(host=host.name, name="imports", ok=True,
                               detail=f"{wanted} package(s) the script imports, found by {python}"))
        return items
    warn = config.run.imports_check == "warn"
    items.append(CheckItem(
        host=host.name, name="imports", ok=warn,
        detail=("warning: " if warn else "") + f"{required[0].where.split(':')[0]} and its "
               f"modules import " + ", ".join(f"{u.name} ({u.where})" for u in required)
               + f", which {python} cannot find",
        hint=f"on {host.name}: {_install(host, [u.name for u in required])}"
             + ("" if warn else " (or [run] imports_check = \"warn\" to launch anyway)")))
    return items


def _install(host: HostSection, modules: list[str]) -> str:
    dists = list(dict.fromkeys(distribution(m) for m in modules))
    return pip_line(host, dists) + torch_index_note(modules)


SCRIPT_KEYS_CHECK = "script-keys"
"""The check item naming the ``[run]`` keys a script run ignores (``corral run`` logs it)."""


LEFT_OUT_CHECK = "push"
"""The check item naming what of the user's folder is not pushed though no pattern says so (a
link out of the folder, a FIFO): ``corral run`` logs it too."""
DATA_CHECK = "data-sync"
"""The check item that says what data a script run sends (``data_line``); logged by
``corral run`` too."""


def left_out_items(config: ClusterConfig, code: UserCode | None) -> list[CheckItem]:
    """The user folder over the push budget (a failure naming the largest files), and a
    warning naming the links out of it and the special files a push leaves out (``code``: the
    run's user code)."""
    if code is None:
        return []
    tree = walk_tree(code.folder)
    items = []
    if (problem := budget_problem(code.folder, tree)) is not None:
        items.append(CheckItem(host="*", name=LEFT_OUT_CHECK, ok=False, detail=problem,
                               hint="docs/scripts.md: from torchrun to corral"))
    if (line := left_out_line(tree)) is not None:
        items.append(CheckItem(
            host="*", name=LEFT_OUT_CHECK, ok=True, detail=f"warning: {line}",
            hint="a link out of the folder is linked as is on hosts that have its target "
                 "(named before launch on the others); name it in [run] data to send it"))
    if (line := home_line(tree)) is not None:
        items.append(CheckItem(host="*", name=DATA_CHECK, ok=True, detail=line,
                               hint="a rank that reads it fails; a line !PATH at the end of "
                                    ".corralignore sends it"))
    if config.run.script is not None and (
            line := data_line(code.folder, config.run.data, config.path.parent)) is not None:
        items.append(CheckItem(host="*", name=DATA_CHECK, ok=True, detail=line,
                               hint="docs/data.md: your data"))
    return items


def script_keys_items(config: ClusterConfig) -> list[CheckItem]:
    """A warning naming the ``[run]`` keys a script run ignores (none: no item)."""
    line = ignored_keys_line(config.run)
    if line is None:
        return []
    return [CheckItem(host="*", name=SCRIPT_KEYS_CHECK, ok=True, detail=f"warning: {line}",
                      hint="leave them out of [run] for a script, or keep them for tasks")]
