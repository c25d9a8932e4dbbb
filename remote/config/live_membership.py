"""Whether a run gets live membership (a membership port for its ranks), read from its
cluster.toml alone: no host is asked, so the pure decider (``remote/run/decide_members.py``)
and the pre-flight (``remote/checks/membership_port.py``) read the same answer."""

from __future__ import annotations

import ast

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig
from remote.config.task_code import UserCode, user_code

LIVE_OPT_IN_MODULES = ("trainer.integrations.ddp", "corral.ddp", "trainer.integrations.hf",
                       "corral.hf")
"""The import names of the DDP helper and the Hugging Face / TRL opt-in (docs/scripts.md): a
script importing one joins and leaves live."""


def membership_refusal(config: ClusterConfig, code: UserCode | None = None) -> str | None:
    """Why the run's ranks get no membership port, as a log line's reason (None: they get
    one). The one place that decides it: every run of corral's own loop has it unless ``[run]
    live_membership = false`` (with ``on_host_loss = "continue"``, its hot path: a lost host is
    left behind by the survivors instead of a restart); never for a script run as is (it
    restarts from its own checkpoint on a change of hosts) nor with ``outer_overlap`` (an
    exchange still under way crosses every round's end). A sharded run (``shard_state``) has it:
    a planned leave or a join re-slices the state live, a lost host restarts it
    (``hot_path_refusal``: its slice is lost with it). Without
    the port, ``corral leave`` and ``join`` refuse the run and a lost host takes the restart at
    once instead of waiting for the survivors. A script that uses the DDP helper gets the port:
    its hosts leave and join live (a lost host still restarts it: ``hot_path_refusal``), and
    so does one with the Hugging Face / TRL opt-in.
    ``code``: the script as the caller located it already (else located here)."""
    run = config.run
    if run.script is not None and not uses_live_opt_in(config, code):
        return ("a script run as is restarts from its own checkpoint (the DDP helper, "
                "`trainer.integrations.ddp.Shares`, and the HF/TRL opt-in join and leave live)")
    if run.exchange != "exact" and run.outer_overlap:
        return "`outer_overlap = true`: an exchange under way crosses every round's end"
    if not run.live_membership:
        return "`[run] live_membership = false`"
    first = config.hosts[0].name if config.hosts else None
    if first is not None and config.cluster.master not in (None, first):
        # Launch rank 0 serves the membership store and runs on the first host; the ranks
        # look for the store on the master's address.
        return (f"`[cluster] master = \"{config.cluster.master}\"` is not the first host "
                f"({first}): put the master first in cluster.toml for live joins and leaves")
    return None


def wants_membership_port(config: ClusterConfig, code: UserCode | None = None) -> bool:
    """Whether the run's ranks get a membership port (``membership_refusal`` says why not)."""
    return membership_refusal(config, code) is None


def uses_live_opt_in(config: ClusterConfig, code: UserCode | None = None) -> bool:
    """Whether the run's script imports the DDP helper or the HF/TRL opt-in (read statically,
    nothing runs; a script that cannot be read or parsed: no, its own check says why).
    ``code``: the script as the caller located it already (else located here)."""
    try:
        code = code or user_code(config.run, config.path.parent)
        tree = ast.parse(code.source.read_bytes()) if code is not None else None
    except (CorralError, OSError, SyntaxError, ValueError):
        return False
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.ImportFrom) and node.module in LIVE_OPT_IN_MODULES:
            return True
        if isinstance(node, ast.Import) and any(a.name in LIVE_OPT_IN_MODULES
                                                for a in node.names):
            return True
    return False
