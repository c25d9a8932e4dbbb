"""This machine's check for ``[tracking]``: the package of each tracker a run logs to.

The trackers run here (from the copy of the events), never on the hosts, so the check is one
cluster-wide item per tracker, like the local run_root's.
"""

from __future__ import annotations

import importlib.util

from remote.config.cluster import ClusterConfig
from remote.events import CheckItem

MISSING = {
    "mlflow": ("MLflow is not installed; install the mlflow extra (pip install "
               "'corral[mlflow]', or pip install mlflow-skinny sqlalchemy alembic)"),
    "aim": ("Aim is not installed; install the aim extra (pip install 'corral[aim]', or pip "
            "install aim). Aim publishes wheels only up to Python 3.12 and whether it is still "
            "maintained is in doubt: MLflow is the tracker corral tests best"),
}
"""Per tracker: what to install, said when its package cannot be imported."""


def installed(package: str) -> bool:
    """True when ``package`` can be imported (looked up, not imported: MLflow takes seconds)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def tracker_items(config: ClusterConfig) -> list[CheckItem]:
    """One item per tracker ``[tracking]`` names: its package is importable here."""
    wanted = {"mlflow": config.tracking.mlflow, "aim": config.tracking.aim}
    return [CheckItem(host="*", name=f"tracking-{name}", ok=installed(name),
                      detail=f"this machine: {where}" if installed(name) else
                      f"this machine: no {name} package",
                      hint="" if installed(name) else MISSING[name])
            for name, where in wanted.items() if where]
