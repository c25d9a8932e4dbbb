"""The upper bounds of cluster.toml's numbers shared by several keys.

Without an upper bound a value like ``gpus = 10**18`` or ``nproc = 10**8`` passes and then
makes a plan, a launch or ``export k8s`` build billions of ranks. ``[cluster]``, ``[[hosts]]``
and ``[ssh]`` keys, and ``[run]``'s own, declare theirs beside their lower ones
(``remote.config.value_rules.key``); ``[run]``'s whole-number settings, shared with the trainer,
are bounded by ``MAX_COUNT`` (``remote.config.rules.run_problems``). Checked when the file is
read, so for every command (``tests/remote/test_config_ranges.py``).
"""

from __future__ import annotations

MAX_COUNT = 10**12
"""Upper bound for step, sample and batch counts: far beyond any run, well inside the 64-bit
integers torch and the trainer's flags work with."""

MAX_RANKS_PER_HOST = 1024
"""Upper bound for a host's ``gpus`` and ``nproc``: beyond any machine, small enough that a
plan or a manifest per rank stays small."""
