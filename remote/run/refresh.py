"""``corral status``: the recorded runs, re-examined on their hosts where that can change them.

A run whose follower went away keeps its last recorded state, and a run that ended while a host
was cut off may have left processes there. Refreshing asks the hosts about every run whose
processes may be alive: runs not in a final state, and runs with ``suspect_hosts``. The outcome
(``state``) and the cleanup (``cleanup``, ``suspect_hosts``) are kept apart: finding leftovers
of a failed run never turns it into another outcome.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import replace

from remote.config.cluster import ClusterConfig
from remote.events import FINAL_RUN_STATES
from remote.hosts.pool import HostPool
from remote.hosts.transport import Transport, shell_path
from remote.records.runs import RunInfo, list_runs, run_dir_for
from remote.run.record import recorded_refresh
from remote.run.stop import count_command, count_run_processes, counted
from trainer.run_layout import IN_RUN_DIR

LeftoverProbe = tuple[int, str, bool]
"""Per host: processes of the run alive, the launcher's exit status (or ""), stopped on request."""


async def _probe(config: ClusterConfig, transport: Transport, info: RunInfo) -> LeftoverProbe:
    name = transport.host.name
    run_dir = shell_path(run_dir_for(config, info.run_id))
    script = (f"{count_command(info.run_id, transport.host)}; "
              f"cd {run_dir} 2>/dev/null && cat {shlex.quote(IN_RUN_DIR.host_file(name, 'exit'))} "
              f"2>/dev/null; echo; test -e {shlex.quote(IN_RUN_DIR.host_file(name, 'stopped'))} "
              "&& echo stopped; true")
    lines = (await transport.run(script, timeout=60.0)).stdout.split("\n")
    return counted(name, lines[0].strip()), lines[1].strip(), "stopped" in lines[2:]


def _outcome(results: list[LeftoverProbe]) -> str:
    if any(count for count, _, _ in results):
        return "running"
    if any(stopped for _, _, stopped in results):
        return "stopped"
    if all(code == "0" for _, code, _ in results):
        return "completed"
    return "failed"


def _leftovers(info: RunInfo, found: dict[str, LeftoverProbe | BaseException]) -> RunInfo:
    """``info`` with its cleanup as the suspect hosts now show it (outcome unchanged)."""
    left = {h: r[0] for h, r in found.items() if not isinstance(r, BaseException) and r[0]}
    unreachable = {h for h, r in found.items() if isinstance(r, BaseException)}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    if left:
        cleanup = ("processes left: " + ", ".join(f"{n} on {h}" for h, n in sorted(left.items()))
                   + f" (seen {stamp}); end them with `corral stop {info.run_id}`")
    elif unreachable:
        cleanup = info.cleanup
    else:
        cleanup = f"no process left on {', '.join(sorted(found))} (checked {stamp})"
    return replace(info, cleanup=cleanup, suspect_hosts=tuple(sorted(set(left) | unreachable)))


async def refresh_runs(config: ClusterConfig, pool: HostPool) -> list[RunInfo]:
    """``list_runs``, re-examined on the hosts (see ``refresh_runs_report``)."""
    return (await refresh_runs_report(config, pool))[0]


async def refresh_runs_report(config: ClusterConfig, pool: HostPool
                              ) -> tuple[list[RunInfo], list[str]]:
    """``list_runs``, with every run whose processes may be alive re-examined on its hosts, and
    the ids of the runs that could not be (a host unreachable): those keep their record.

    A run not in a final state: any process of the run left means ``running``; otherwise the
    launchers' exit files decide (``completed`` when all exited 0, ``stopped`` when ``corral
    stop`` ended them, else ``failed``). Suspect hosts (of a run with an outcome, or hosts a
    live run dropped with ``on_host_loss = "continue"``) are asked for processes of the run,
    and ``cleanup`` says what is left where.
    """
    refreshed: list[RunInfo] = []
    unverified: list[str] = []
    for info in list_runs(config):
        final = info.state in FINAL_RUN_STATES
        # A live run's own hosts tell its state; suspect hosts (a dropped host of a live run,
        # a cut-off one of an ended run) only what is left there.
        hosts = [] if final else list(info.hosts)
        suspects = [h for h in info.suspect_hosts if h not in hosts]
        if not hosts and not suspects:
            refreshed.append(info)
            continue
        found = await pool.gather(lambda t, i=info: _probe(config, t, i),  # type: ignore[misc]
                                  hosts + suspects)
        if any(isinstance(r, BaseException) for r in found.values()):
            unverified.append(info.run_id)
        updated = info
        own = [found[h] for h in hosts]
        reachable = [r for r in own if not isinstance(r, BaseException)]
        if hosts and len(reachable) == len(own):
            updated = replace(updated, state=_outcome(reachable))
        if suspects:
            updated = _leftovers(updated, {h: found[h] for h in suspects})
        recorded_refresh(config, info, updated)
        refreshed.append(updated)
    return refreshed, unverified


async def live_processes(config: ClusterConfig, pool: HostPool, info: RunInfo) -> dict[str, int]:
    """Per host of ``info`` (its hosts and suspect hosts) that answered: how many processes of
    the run still run there, only hosts with some (an unreachable host adds nothing)."""
    hosts = sorted(set(info.hosts) | set(info.suspect_hosts))
    known = {h.name for h in config.hosts}  # a host since removed from cluster.toml: unknown
    found = await pool.gather(
        lambda t: count_run_processes(t, info.run_id), [h for h in hosts if h in known])
    return {h: n for h, n in found.items() if not isinstance(n, BaseException) and n}
