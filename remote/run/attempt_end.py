"""What an attempt's end means, decided by the lifecycle loop from what its follower saw.

The follower reports ``AttemptEnded``: the monitor's ``Finding``, the hosts it lost, and what a
stop the loop asked for found. ``settle_attempt`` turns that into the attempt's outcome: a
failed attempt whose launchers all ended by themselves is swept for straggler ranks (only by
the process that launched the run: following is read-only); a stop that left processes says
so in the detail; a run that had already ended before this process followed it keeps its
recorded outcome (that follower saw only the events after its copy); and the hosts where
processes may be left are named (``Leftovers``). The restart decision reads the result
(``remote/run/recovery.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from remote.events import FINAL_RUN_STATES, StopReport
from remote.hosts.pool import HostPool
from remote.records.runs import RunInfo, describe_stop
from remote.run.failures import HostLost
from remote.run.lifecycle import AttemptEnded, Finding, RunOutcome
from remote.run.stop import STOP_GRACE_ON_FAILURE_S, stop_run


@dataclass(frozen=True)
class Leftovers:
    """What may be left of an attempt on the hosts."""

    stop_clean: bool
    """The stop after a failure left nothing behind (a restart needs it); True when no stop
    was made."""
    suspects: set[str]
    """Hosts cut off when the attempt ended, or where its stop left processes: ``corral
    status`` looks there again (the run's record lists them)."""


def leftovers(lost: dict[str, HostLost], report: StopReport | None) -> Leftovers:
    """Where processes of the attempt may be left, from the hosts lost and what the stop
    found. Lost hosts cannot be reached to stop: with ``on_host_loss`` they are dropped anyway,
    so they do not make the stop unclean."""
    stop_clean = report is None or (
        not any(report.remaining.values()) and set(report.unreachable) <= set(lost))
    suspects = set(lost)
    if report is not None:
        suspects = (suspects - set(report.remaining)) | set(report.unreachable) | {
            h for h, n in report.remaining.items() if n}
    return Leftovers(stop_clean=stop_clean, suspects=suspects)


def kept_outcome(final: Finding, info: RunInfo, *, launching: bool) -> Finding:
    """``final``, or for a run that had ended before this process followed it, the outcome
    and detail decided then (the launching follower saw every event; this one only the ones
    after its copy)."""
    if launching or info.state not in FINAL_RUN_STATES:
        return final
    return replace(final, outcome=RunOutcome(info.state), detail=info.detail or final.detail)


async def settle_attempt(ended: AttemptEnded, *, launching: bool, info: RunInfo,
                         pool: HostPool, run_dir: str) -> tuple[Finding, Leftovers]:
    """The attempt's outcome and what may be left of it (see the module's docstring)."""
    final, report = ended.final, ended.stop
    if report is not None:
        if not report.clean:
            final = replace(final, detail=final.detail + f"\n({describe_stop(report)})")
    elif final.outcome is RunOutcome.FAILED and launching:
        # Every launcher ended by itself; make sure no straggler rank is left either.
        report = await stop_run(pool, run_dir, info.run_id, grace_s=STOP_GRACE_ON_FAILURE_S)
    return kept_outcome(final, info, launching=launching), leftovers(ended.lost, report)
