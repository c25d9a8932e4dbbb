"""Which tracker packages this machine has, and what to install for one it lacks.

The trackers run here, from the copy of the events: the writer (``tracker_sinks.py``) refuses
a tracker whose package is missing, and ``corral check`` (``remote/checks/trackers.py``) says
so first; both read it here.
"""

from __future__ import annotations

import importlib.util

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
