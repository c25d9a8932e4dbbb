"""Pre-flight check of the Python packages the run's task needs on every host.

The built-in ``causal_lm`` task needs transformers and peft (``TASK_PACKAGES``); the pushed
trainer imports them only for that task, so other runs never ask. The probe reads installed
versions from package metadata: nothing is imported, so it costs milliseconds.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from remote.config.task_code import needed_packages
from remote.events import CheckItem
from remote.hosts.interpreter import last_json, python_c, python_label
from trainer.settings.train_config import requirement_name

if TYPE_CHECKING:
    from remote.config.cluster import ClusterConfig, HostSection

PACKAGES_PY = """\
import json, sys
from importlib import metadata
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        found[name] = None
print(json.dumps(found))
"""


def packages_probe(host: HostSection, config: ClusterConfig) -> str | None:
    """The shell command of the packages probe, or None when the task needs none."""
    names = [requirement_name(r) for r in needed_packages(config)]
    if not names:
        return None
    return f"{python_c(host, PACKAGES_PY, *names)} 2>&1"


def judge_packages(host: HostSection, config: ClusterConfig, output: str,
                   status: int) -> list[CheckItem]:
    """One ``packages`` item: every needed package found (versions), or which are missing
    with the pip line that installs them."""
    needed = needed_packages(config)
    if not needed:
        return []
    found = (last_json(output) if status == 0 else None) or {}
    names = {r: requirement_name(r) for r in needed}
    missing = [r for r in needed if not found.get(names[r])]
    task = config.run.task
    if not missing:
        versions = ", ".join(f"{names[r]} {found[names[r]]}" for r in needed)
        return [CheckItem(host=host.name, name="packages", ok=True,
                          detail=f"{versions} (for the {task} task)")]
    return [CheckItem(
        host=host.name, name="packages", ok=False,
        detail=f"the {task} task needs {', '.join(names[r] for r in missing)}, which "
               f"{python_label(host)} cannot find",
        hint=f"corral setup {host.name}, or on {host.name}: {pip_line(host, missing)}")]


def pip_line(host: HostSection, requirements: list[str]) -> str:
    """The command that installs ``requirements`` for the host's python (each quoted)."""
    return f"{python_label(host)} -m pip install " + " ".join(map(shlex.quote, requirements))
