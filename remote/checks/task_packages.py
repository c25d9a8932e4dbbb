"""Pre-flight check of the Python packages the run's task needs on every host.

The built-in ``causal_lm`` task needs transformers and peft (``TASK_PACKAGES``); the pushed
trainer imports them only for that task, so other runs never ask. The probe reads installed
versions from package metadata: nothing is imported, so it costs milliseconds.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from remote.api import CheckItem
from remote.checks.rendezvous_port import last_json, python_c
from remote.hosts.interpreter import python_label
from trainer.settings.train_config import TASK_PACKAGES

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


def needed_packages(config: ClusterConfig) -> tuple[str, ...]:
    """Requirement strings (``"peft>=0.17,<1"``) the run's task needs on every host."""
    return TASK_PACKAGES.get(config.run.task, ())


def _name(requirement: str) -> str:
    return requirement.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip()


def packages_probe(host: HostSection, config: ClusterConfig) -> str | None:
    """The shell command of the packages probe, or None when the task needs none."""
    names = [_name(r) for r in needed_packages(config)]
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
    missing = [r for r in needed if not found.get(_name(r))]
    task = config.run.task
    if not missing:
        versions = ", ".join(f"{_name(r)} {found[_name(r)]}" for r in needed)
        return [CheckItem(host=host.name, name="packages", ok=True,
                          detail=f"{versions} (for the {task} task)")]
    python = python_label(host)
    pip = f"{python} -m pip install " + " ".join(shlex.quote(r) for r in missing)
    return [CheckItem(
        host=host.name, name="packages", ok=False,
        detail=f"the {task} task needs {', '.join(_name(r) for r in missing)}, which "
               f"{python} cannot find",
        hint=f"corral setup {host.name}, or on {host.name}: {pip}")]
