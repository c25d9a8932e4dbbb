"""Which ``[run]`` keys a script run uses: the others are for corral's own tasks.

A script brings its own model, data, optimiser, length and precision (its arguments say them),
so ``[run]`` keys that set those for corral's trainer do nothing for it; a cluster.toml written
for a task (the embedded one sets ``model``, ``split``...) still runs a script, with one line
naming the keys it ignores (``corral check``, ``corral run`` and its ``--dry-run``).
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from remote.config.cluster import RunSection

SCRIPT_KEYS = frozenset({
    "task", "name", "code", "data", "script", "args", "imports_check", "policy", "split",
    "rebalance_every",
    "backend", "hang_factor", "hang_limit", "max_restarts", "on_host_loss",
})
"""``[run]`` keys a script run uses (docs/scripts.md); ``global_batch`` goes with ``split``."""


def ignored_keys(run: RunSection) -> tuple[str, ...]:
    """The ``[run]`` keys set that a script run ignores, in ``RunSection``'s order (every one
    written, its default value or not); none for a task run."""
    if run.script is None:
        return ()
    default = type(run)()
    unused = [f.name for f in fields(run) if f.init and f.name not in SCRIPT_KEYS
              and _set(run, f.name, getattr(default, f.name))]
    if run.split is not None and "global_batch" in unused:
        unused.remove("global_batch")  # the split's sum: it stands or falls with the split
    return tuple(unused)


def _set(run: RunSection, name: str, default: object) -> bool:
    """Whether cluster.toml set key ``name`` (as read; a section built in code: a value other
    than the default that is not None, which TOML cannot write: ``epochs`` is None when
    ``steps`` is set, and was not written)."""
    if run.keys_set:
        return name in run.keys_set
    value = getattr(run, name)
    return value is not None and value != default


def ignored_keys_line(run: RunSection) -> str | None:
    """One line naming what a script run leaves of ``[run]`` (None: nothing, or a task run)."""
    if run.script is None:
        return None
    ignored = ignored_keys(run)
    parts = []
    if ignored:
        parts.append(f"[run] {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} for "
                     "corral's own tasks: the script's own arguments decide them")
    if run.split is not None:
        parts.append(f"[run] split = {list(run.split)} applies only if it fits the script's "
                     "global batch (else the shares start equal, with one warning)")
    return "; ".join(parts) or None
