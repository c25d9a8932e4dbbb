"""Every figure of a run, defined once, and the face the console reads them through.

``metrics.py`` defines each figure from the events (a rank's samples/s, the cluster's, the
ideal, efficiency, the balancer's moves); ``reducer.py`` is the one reducer (``RunFigures``)
that the console, ``corral report``, the plots, TensorBoard and the trackers feed event by
event; ``series.py`` keeps the per-step values the plots draw; ``solo.py`` sets the run against
its hosts alone (% of Σ solo, × fastest host). Plain Python over
``trainer.events``: nothing here reads a file or reaches a host (the run records, which do,
are ``remote/records/``).
"""

from figures.metrics import (
    FIXED_COST_DOMINATES,
    Metric,
    Move,
    RankFigures,
    StepRow,
    efficiency_of,
    ideal_of,
)
from figures.reducer import RunFigures
from figures.series import RunSeries
from figures.solo import HostSolo, SoloBaseline, run_baseline

__all__ = [
    "FIXED_COST_DOMINATES",
    "HostSolo",
    "Metric",
    "Move",
    "RankFigures",
    "RunFigures",
    "RunSeries",
    "SoloBaseline",
    "StepRow",
    "efficiency_of",
    "ideal_of",
    "run_baseline",
]
