"""The membership-port check: a second port on the master for a ``task`` run's live joins
and leaves (``CORRAL_MEMBERSHIP_PORT``: rank 0 serves the membership store there), free on
the master and reachable from every worker, tested as the rendezvous port is
(``remote/checks/rendezvous_port.py``: a short-lived listener, a connect from each worker).

Only corral's own training loop takes part in a live join or leave; a script run as is keeps
today's path (a lost host restarts the run from the script's own checkpoint), so no port is
picked for one (``wants_membership_port``).
"""

from __future__ import annotations

import asyncio
import random

from remote.checks.rendezvous_port import AUTO_PORT_RANGE, PortListener, connect_worker
from remote.config.cluster import ClusterConfig
from remote.events import CheckItem
from remote.hosts.pool import HostPool

MEMBERSHIP_CHECK = "membership-port"
"""The check item of the membership port."""
PORT_TRIES = 2
"""Random ports tried before the master is let pick any free one."""


def membership_refusal(config: ClusterConfig) -> str | None:
    """Why the run's ranks get no membership port, as a log line's reason (None: they get
    one). The one place that decides it: ``[run] live_membership`` when written, else on
    exactly with ``on_host_loss = "continue"`` (its hot path: a lost host is left behind by the
    survivors instead of a restart); never for a script run as is (it restarts from its own
    checkpoint on a change of hosts) nor with ``outer_overlap`` (an exchange still under way
    crosses every round's end) nor with ``shard_state`` sharded (a slice is not moved live; the
    restart's resume re-slices the checkpoint's state). Without the port, ``corral leave`` and
    ``join`` refuse the run and a lost host takes the restart at once instead of waiting for
    the survivors."""
    run = config.run
    if run.script is not None:
        return "a script run as is restarts from its own checkpoint"
    if run.exchange != "exact" and run.outer_overlap:
        return "`outer_overlap = true`: an exchange under way crosses every round's end"
    if run.shard_state != "replicate":  # a restart resumes it re-sliced for the survivors
        return (f'`shard_state = "{run.shard_state}"`: a leaving host\'s slice of the state '
                "is not moved live yet")
    if run.live_membership is False:
        return "`[run] live_membership = false`"
    if run.live_membership is None and run.on_host_loss != "continue":
        return f'`[run] on_host_loss = "{run.on_host_loss}"` without `live_membership = true`'
    return None


def wants_membership_port(config: ClusterConfig) -> bool:
    """Whether the run's ranks get a membership port (``membership_refusal`` says why not)."""
    return membership_refusal(config) is None


def _candidate(avoid: int | None) -> int:
    """A random port of ``AUTO_PORT_RANGE`` other than ``avoid`` (the rendezvous port)."""
    while (port := random.randint(*AUTO_PORT_RANGE)) == avoid:
        pass
    return port


async def check_membership_port(config: ClusterConfig, pool: HostPool, master_addr: str,
                                avoid: int | None) -> tuple[list[CheckItem], int | None]:
    """The master's and every reachable worker's ``membership-port`` items, and the port
    tested (free on the master and not ``avoid``, the rendezvous port; None when no such port
    was found). A random port is tried first (``PORT_TRIES`` times), then any free one."""
    master = config.master_host
    workers = [h for h in config.hosts if h.name != master.name]
    tries = [_candidate(avoid) for _ in range(PORT_TRIES)] + [0]
    for target in tries:
        listener = PortListener(config, pool, target, len(workers), name=MEMBERSHIP_CHECK)
        try:
            opened = await listener.open()
            if isinstance(opened, int) and opened == avoid:
                continue  # the master's pick fell on the rendezvous port: torch will hold it
            if not isinstance(opened, int):
                if listener.taken:
                    continue
                return opened or [], None
            replies = await asyncio.gather(*(
                connect_worker(pool, h, master, master_addr, opened, MEMBERSHIP_CHECK)
                for h in workers))
        finally:
            await listener.close()
        lost = (", and a lost host left behind without a restart"
                if config.run.on_host_loss == "continue" else "")
        held = CheckItem(host=master.name, name=MEMBERSHIP_CHECK, ok=True,
                         detail=f"port {opened} free on {master.name} (for live joins and "
                         f"leaves{lost})")
        return [held, *(r for r in replies if r is not None)], opened
    return [CheckItem(host=master.name, name=MEMBERSHIP_CHECK, ok=False,
                      detail=f"no free port on {master.name} for live joins and leaves",
                      hint=f"free a TCP port on {master.name}")], None
