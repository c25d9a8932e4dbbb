"""``corral status``: the recorded runs, re-examined on their hosts where that can change them.

A run whose follower went away keeps its last recorded state, and a run that ended while a host
was cut off may have left processes there. Refreshing asks the hosts about every run whose
processes may be alive: runs not in a final state, and runs with ``suspect_hosts``. The outcome
(``state``) and the cleanup (``cleanup``, ``suspect_hosts``) are kept apart: finding leftovers
of a failed run never turns it into another outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from remote.config.cluster import ClusterConfig
from remote.events import FINAL_RUN_STATES
from remote.hosts.pool import HostPool
from remote.hosts.transport import Transport, shell_path
from remote.records.runs import RunInfo, list_runs, run_dir_for
from remote.run.record import recorded_refresh
from remote.run.stop import count_command, count_run_processes, counted
from trainer.run_layout import IN_RUN_DIR


@dataclass(frozen=True, kw_only=True)
class LeftoverProbe:
    """What one host says of a run whose processes may be alive."""

    processes: int
    """Processes of the run alive there."""
    exit_code: str
    """The launcher's exit status ("" while it has not exited)."""
    stopped: bool
    """``corral stop`` ended it."""
    exited_at: float
    """Unix time the launcher's exit status was written (0 when it was not)."""


async def _probe(config: ClusterConfig, transport: Transport, info: RunInfo) -> LeftoverProbe:
    name = transport.host.name
    run_dir = run_dir_for(config, info.run_id)
    exit_file = shell_path(f"{run_dir}/{IN_RUN_DIR.host_file(name, 'exit')}")
    stopped = shell_path(f"{run_dir}/{IN_RUN_DIR.host_file(name, 'stopped')}")
    script = (f"{count_command(info.run_id, transport.host)}; "
              f"printf '%s\\n' \"$(cat {exit_file} 2>/dev/null)\" "
              f"\"$(stat -c %Y {exit_file} 2>/dev/null)\"; "
              f"test -e {stopped} && echo stopped; true")
    lines = [*(await transport.run(script, timeout=60.0)).stdout.split("\n"), "", ""]
    at = lines[2].strip()
    return LeftoverProbe(processes=counted(name, lines[0].strip()), exit_code=lines[1].strip(),
                         stopped="stopped" in lines[3:],
                         exited_at=float(at) if at.isdigit() else 0.0)


def _outcome(results: list[LeftoverProbe]) -> str:
    if any(r.processes for r in results):
        return "running"
    if any(r.stopped for r in results):
        return "stopped"
    if all(r.exit_code == "0" for r in results):
        return "completed"
    return "failed"


def _refreshed(info: RunInfo, results: list[LeftoverProbe]) -> RunInfo:
    """``info`` with the state its hosts show; an outcome found here gets its end time, the
    last launcher's exit (when this check found it, if none wrote one): a run nobody
    followed has one like any other."""
    state = _outcome(results)
    if state not in FINAL_RUN_STATES:
        return replace(info, state=state)
    ended = info.ended or max((r.exited_at for r in results), default=0.0) or time.time()
    return replace(info, state=state, ended=max(ended, info.started))


def _leftovers(info: RunInfo, found: dict[str, LeftoverProbe | BaseException]) -> RunInfo:
    """``info`` with its cleanup as the suspect hosts now show it (outcome unchanged)."""
    left = {h: r.processes for h, r in found.items()
            if not isinstance(r, BaseException) and r.processes}
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
        updated, reached = await refresh_run(config, pool, info)
        refreshed.append(updated)
        if not reached:
            unverified.append(info.run_id)
    return refreshed, unverified


async def refresh_run(config: ClusterConfig, pool: HostPool, info: RunInfo
                      ) -> tuple[RunInfo, bool]:
    """One run of ``refresh_runs_report``, recorded when its hosts changed it, and whether
    every host asked answered (a run with an outcome and no suspect host asks none)."""
    final = info.state in FINAL_RUN_STATES
    # A live run's own hosts tell its state; suspect hosts (a dropped host of a live run,
    # a cut-off one of an ended run) and the hosts a live run left behind (a lost host's
    # blocked ranks stay until their connections close) only what is left there.
    hosts = [] if final else list(info.hosts)
    maybe_left = info.suspect_hosts if final else (*info.suspect_hosts, *info.left_hosts)
    suspects = sorted({h for h in maybe_left if h not in hosts})
    if not hosts and not suspects:
        return info, True
    found = await pool.gather(lambda t: _probe(config, t, info), hosts + suspects)
    updated = info
    own = [found[h] for h in hosts]
    reachable = [r for r in own if not isinstance(r, BaseException)]
    if hosts and len(reachable) == len(own):
        updated = _refreshed(updated, reachable)
    if suspects:
        updated = _leftovers(updated, {h: found[h] for h in suspects})
    recorded_refresh(config, info, updated)
    return updated, not any(isinstance(r, BaseException) for r in found.values())


async def live_processes(config: ClusterConfig, pool: HostPool, info: RunInfo) -> dict[str, int]:
    """Per host of ``info`` (its hosts, suspect hosts and the hosts it left behind) that
    answered: how many processes of the run still run there, only hosts with some (an
    unreachable host adds nothing)."""
    hosts = sorted(set(info.hosts) | set(info.suspect_hosts) | set(info.left_hosts))
    known = {h.name for h in config.hosts}  # a host since removed from cluster.toml: unknown
    found = await pool.gather(
        lambda t: count_run_processes(t, info.run_id), [h for h in hosts if h in known])
    return {h: n for h, n in found.items() if not isinstance(n, BaseException) and n}
