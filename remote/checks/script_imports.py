"""Pre-flight check that every host's Python finds the packages a user's script imports.

The names come from the script on this machine (``remote.config.script_source``: its top-level
imports, less its own folder's modules and the standard library). Each host's Python is asked
``importlib.util.find_spec`` for each: nothing is imported, so the probe costs little, and a
missing package is named with the host and the pip line that installs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from remote.checks.task_packages import pip_line
from remote.config.script_keys import ignored_keys_line
from remote.config.script_source import imported_packages
from remote.config.task_code import user_code
from remote.events import CheckItem
from remote.hosts.interpreter import last_json, python_c, python_label

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


def script_packages(config: ClusterConfig) -> tuple[str, ...]:
    """The modules the run's script imports that its hosts must provide (none without one)."""
    code = user_code(config.run, config.path.parent) if config.run.script else None
    return () if code is None else imported_packages(code.source, code.folder)


def imports_probe(host: HostSection, config: ClusterConfig) -> str | None:
    """The shell command of the imports probe, or None when there is nothing to ask."""
    names = script_packages(config)
    return f"{python_c(host, FIND_SPECS_PY, *names)} 2>&1" if names else None


def judge_imports(host: HostSection, config: ClusterConfig, output: str,
                  status: int) -> list[CheckItem]:
    """One ``imports`` item: every module the script imports found, or which are not."""
    names = script_packages(config)
    if not names:
        return []
    found = (last_json(output) if status == 0 else None) or {}
    missing = [n for n in names if not found.get(n)]
    script = user_code(config.run, config.path.parent)
    assert script is not None
    if not missing:
        return [CheckItem(host=host.name, name="imports", ok=True,
                          detail=f"{len(names)} package(s) {script.source.name} imports")]
    return [CheckItem(
        host=host.name, name="imports", ok=False,
        detail=f"{script.source} imports {', '.join(missing)}, which {python_label(host)} on "
               f"{host.name} cannot find",
        hint=f"on {host.name}: {pip_line(host, missing)} (the pip name may differ from the "
             "module's)")]


SCRIPT_KEYS_CHECK = "script-keys"
"""The check item naming the ``[run]`` keys a script run ignores (``corral run`` logs it)."""


def script_keys_items(config: ClusterConfig) -> list[CheckItem]:
    """A warning naming the ``[run]`` keys a script run ignores (none: no item)."""
    line = ignored_keys_line(config.run)
    if line is None:
        return []
    return [CheckItem(host="*", name=SCRIPT_KEYS_CHECK, ok=True, detail=f"warning: {line}",
                      hint="leave them out of [run] for a script, or keep them for tasks")]
