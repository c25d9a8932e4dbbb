"""A finished run's leftovers, ended by the next ``corral check`` or ``corral run`` (issue 81).

A host cut off while its run went on without it (live membership) or ended keeps what ran
there until its ranks notice (``trainer/membership/reach.py``) or, cut off for good, until it
is back. The run's record keeps it as a suspect host (``RunInfo.suspect_hosts``). When the
pre-flight check then finds processes of a run on a host (the ``leftovers`` item), those of a
run of this cluster that has an outcome (completed, failed, stopped) are corral's own to end:
known by the whole run id in their command line and environment, ended the way ``corral stop``
ends them (TERM, ``FINISH_GRACE_S``, KILL, counted again), said in the item, and written to
the run's ``cleanup``. Processes of a live run, or of another cluster's, still fail the item.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig
from remote.events import FINAL_RUN_STATES, CheckReport
from remote.hosts.pool import HostPool
from remote.records.runs import RunInfo, read_run_info, run_dir_for
from remote.run.record import RunRecord
from remote.run.stop import count_run_processes, stop_run

FINISH_GRACE_S = 5.0
"""A finished run's leftovers get this long after TERM before KILL (nothing of them is
waited for: their run is over)."""


def finished_run(config: ClusterConfig, run_id: str) -> RunInfo | None:
    """``run_id``'s record when it is a run of this cluster with an outcome, else None."""
    try:
        info = read_run_info(config, run_id)
    except CorralError:
        return None
    if info.cluster != config.cluster.name or info.state not in FINAL_RUN_STATES:
        return None
    return info


async def end_leftovers(config: ClusterConfig, pool: HostPool, host: str, info: RunInfo
                        ) -> tuple[int, int]:
    """End ``info``'s processes on ``host``; how many there were and how many are left
    (the record's ``cleanup`` and suspect hosts say it too)."""
    found = (await pool.gather(lambda t: count_run_processes(t, info.run_id), [host]))[host]
    stopped = await stop_run(pool, run_dir_for(config, info.run_id), info.run_id,
                             grace_s=FINISH_GRACE_S, hosts=[host])
    left = stopped.remaining.get(host, 0) if host not in stopped.unreachable else -1
    count = found if isinstance(found, int) else 0
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    said = (f"{count} process(es) left on {host} ended by corral ({stamp})" if left == 0 else
            f"{host}: {count} process(es) left, {max(left, 0)} after a stop ({stamp})")
    record = RunRecord(config, info)
    suspects = set(record.recorded().suspect_hosts)
    record.change(cleanup=said, suspect_hosts=tuple(sorted(
        suspects - {host} if left == 0 else suspects | {host})))
    return count, left


async def end_finished_leftovers(config: ClusterConfig, pool: HostPool, report: CheckReport,
                                 leftovers: Mapping[str, tuple[str, ...]]) -> CheckReport:
    """``report`` with each host's ``leftovers`` item after the finished runs' processes
    there were ended (``leftovers``: the run ids the check found per host)."""
    items = list(report.items)
    for host, run_ids in leftovers.items():
        finished = [info for run_id in run_ids if (info := finished_run(config, run_id))]
        at = next((i for i, it in enumerate(items)
                   if it.host == host and it.name == "leftovers"), None)
        if not finished or at is None:
            continue
        ended, kept = [], [r for r in run_ids if r not in {i.run_id for i in finished}]
        for info in finished:
            count, left = await end_leftovers(config, pool, host, info)
            if left == 0:
                ended.append(f"{count} process(es) of finished run {info.run_id}")
            else:
                kept.append(info.run_id)
        note = "ended " + ", ".join(ended) + " (its own, by run id)" if ended else ""
        if kept:
            detail = items[at].detail + (f"; {note}" if note else "")
            items[at] = replace(items[at], detail=detail)
        else:
            items[at] = replace(items[at], ok=True, detail=note, hint="")
    return replace(report, items=tuple(items))
