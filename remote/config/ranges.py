"""The upper bound of every number of cluster.toml, in one place.

Each key's lower bound sits beside its own rule (``remote/config/rules.py``); without an upper
one a value like ``gpus = 10**18`` or ``nproc = 10**8`` passes and then makes a plan, a launch
or ``export k8s`` build billions of ranks. Checked when the file is read, so for every command.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_COUNT = 10**12
"""Upper bound for step, sample and batch counts: far beyond any run, well inside the 64-bit
integers torch and the trainer's flags work with."""

MAX_RANKS_PER_HOST = 1024
"""Upper bound for a host's ``gpus`` and ``nproc``: beyond any machine, small enough that a
plan or a manifest per rank stays small."""

UPPER_BOUNDS: dict[str, dict[str, float]] = {
    "hosts": {"gpus": MAX_RANKS_PER_HOST, "nproc": MAX_RANKS_PER_HOST, "threads": 65536,
              "micro_batch": MAX_COUNT, "slowdown": 1e6, "link_gbit": 1e6},
    "run": {"max_restarts": 10**6, "hang_limit": 10**7, "hang_factor": 1e6},
    "ssh": {"connect_timeout": 86400, "keepalive": 86400, "max_parallel_connects": 1024,
            "lost_after": 10**7},
}
"""The largest value of each number of cluster.toml, by section (the lower bounds are beside
each key's rule; ``[run]``'s whole-number settings are bounded by ``MAX_COUNT``): checked once,
when the file is read, for every command (``tests/remote/test_config_ranges.py``)."""


def upper_bound_problems(out: list[tuple[str, str]], values: Mapping[str, Any],
                         section: str) -> None:
    """Add a problem for each number of ``values`` (one ``section``'s keys) above its bound."""
    for key, high in UPPER_BOUNDS[section].items():
        value = values.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > high:
            out.append((key, f"must be at most {high:g}, got {value:g}"))
