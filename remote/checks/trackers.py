"""This machine's check for ``[tracking]``: the package of each tracker a run logs to.

The trackers run here (from the copy of the events), never on the hosts, so the check is one
cluster-wide item per tracker, like the local run_root's.
"""

from __future__ import annotations

from remote.config.cluster import ClusterConfig
from remote.events import CheckItem
from remote.records.tracker_packages import MISSING, installed


def tracker_items(config: ClusterConfig) -> list[CheckItem]:
    """One item per tracker ``[tracking]`` names: its package is importable here."""
    wanted = {"mlflow": config.tracking.mlflow, "aim": config.tracking.aim}
    return [CheckItem(host="*", name=f"tracking-{name}", ok=installed(name),
                      detail=f"this machine: {where}" if installed(name) else
                      f"this machine: no {name} package",
                      hint="" if installed(name) else MISSING[name])
            for name, where in wanted.items() if where]
