"""Whose run a leftover process belongs to, and the ``corral stop`` that reaches it.

Two clusters may share a ``run_root`` (two cluster.toml files over the same hosts). ``corral
stop RUN`` looks a run up among the runs of the cluster.toml it is given, so a leftover of the
other cluster's run needs that cluster's file: its ``run.json`` on this machine names it
(``config_path``). A run started from another machine has no record here; its id still starts
with its cluster's name (``run_id_prefix``).
"""

from __future__ import annotations

import shlex

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig
from remote.records.runs import read_run_info, run_id_prefix


def leftover_run(config: ClusterConfig, run_id: str) -> tuple[str, str]:
    """What to call ``run_id`` in a leftovers line, and the command that stops it."""
    try:
        info = read_run_info(config, run_id)
    except CorralError:
        info = None
    if info is not None and info.cluster != config.cluster.name:
        if info.config_path:
            return (f"{run_id} (cluster {info.cluster!r} of {info.config_path})",
                    f"corral stop -c {shlex.quote(info.config_path)} {run_id}")
        return (f"{run_id} (cluster {info.cluster!r})",
                f"corral stop -c <cluster.toml of {info.cluster!r}> {run_id}")
    if info is None and not run_id.startswith(run_id_prefix(config.cluster.name)):
        # Not recorded here, and not named after this cluster: another machine started it.
        return (f"{run_id} (another cluster's run, started from another machine)",
                f"corral stop -c <its cluster.toml> {run_id}, on the machine that started it")
    return run_id, f"corral stop {run_id}"


def leftovers_line(config: ClusterConfig, run_ids: list[str]) -> tuple[str, str]:
    """The runs named for the check's detail, and its hint: one stop command per run."""
    named = [leftover_run(config, run_id) for run_id in sorted(run_ids)]
    return ", ".join(name for name, _ in named), "; ".join(stop for _, stop in named)
