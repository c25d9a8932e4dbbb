"""The upper bounds of cluster.toml's numbers that are not declared on their own fields.

Without an upper bound a value like ``gpus = 10**18`` or ``nproc = 10**8`` passes and then
makes a plan, a launch or ``export k8s`` build billions of ranks. ``[cluster]``, ``[[hosts]]``
and ``[ssh]`` keys declare theirs beside their lower ones (``remote.config.value_rules.key``);
``[run]``'s are here. Checked when the file is read, so for every command.
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
    "run": {"max_restarts": 10**6, "hang_limit": 10**7, "hang_factor": 1e6},
}
"""The largest value of each number of ``[run]`` that is not a trainer setting (the lower bounds
are beside each key's rule; ``[run]``'s whole-number settings are bounded by ``MAX_COUNT``;
``[cluster]``, ``[[hosts]]`` and ``[ssh]`` declare each key's bounds on its field,
``remote.config.value_rules.key``): checked once, when the file is read, for every command
(``tests/remote/test_config_ranges.py``)."""


def upper_bound_problems(out: list[tuple[str, str]], values: Mapping[str, Any],
                         section: str) -> None:
    """Add a problem for each number of ``values`` (one ``section``'s keys) above its bound."""
    for key, high in UPPER_BOUNDS[section].items():
        value = values.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > high:
            out.append((key, f"must be at most {high:g}, got {value:g}"))
