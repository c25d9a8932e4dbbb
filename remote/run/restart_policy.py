"""Whether a failed attempt restarts, goes on without the hosts it lost, or ends the run, and
what each says: pure rules on the attempt's ``Finding`` (``remote/run/decide.py`` asks them)."""

from __future__ import annotations

from remote.config.cluster import ClusterConfig
from remote.events import HostStatus
from remote.records.runs import RunInfo, unfollowed
from remote.run.failures import Cause, HostLost
from remote.run.lifecycle import Finding, RunOutcome

REPEATED_FAILURES = 2
"""With ``on_host_loss = "continue"``, a host whose ranks failed this many attempts in a row is
dropped like a lost one (a restart on the same hosts would fail again)."""


def count_failure(streaks: dict[str, int], final: Finding) -> tuple[dict[str, int], str | None]:
    """The per-host streaks of failures in a row with ``final`` added (an attempt that failed
    on another host, or did not fail, ends a host's streak), and the host whose streak reached
    ``REPEATED_FAILURES`` (else None)."""
    host = final.failed_host if final.outcome is RunOutcome.FAILED else None
    if host is None:
        return {}, None
    count = streaks.get(host, 0) + 1
    return {host: count}, (host if count >= REPEATED_FAILURES else None)


def restart_refusal(final: Finding, restarts: int, limit: int, *, wanted: bool,
                    stop_clean: bool) -> str | None:
    """Why the run ends with ``final`` instead of restarting: "" when there is nothing to say
    (it did not fail, restarts are off, this follower did not launch it or was asked to
    stop), a reason otherwise; None to restart.

    A diverged run is not restarted (it would diverge again from the same checkpoint), nor one
    that ran out of disk (the disk is still full) or that this machine could not record, nor one
    whose failed attempt may have left processes (they could join the new one)."""
    if final.outcome is not RunOutcome.FAILED or not wanted or not limit:
        return ""
    if restarts >= limit:
        return f"no restart left: [run] max_restarts = {limit}"
    if final.cause is Cause.DIVERGED:
        return "not restarted: a diverged run would diverge again from the same checkpoint"
    if final.cause is Cause.DISK_FULL:
        return "not restarted: the disk is still full"
    if final.cause is Cause.LOCAL_WRITE:
        return "not restarted: this machine cannot record it"
    if not stop_clean:
        return "not restarted: processes of the failed attempt may be left"
    return None


def owner_relaunched(now: RunInfo, followed: RunInfo) -> bool:
    """Whether the record ``now`` says that the corral launching the run (its owner) launched
    another attempt since a follower's attempt began (``followed``: the record then): process
    groups of a new launch, the run launching or running, and that corral still following it."""
    return (now.state in ("launching", "running") and bool(now.pgids)
            and now.pgids != followed.pgids and not unfollowed(now))


def can_go_on_without(config: ClusterConfig, final: Finding, lost: dict[str, HostLost], *,
                      stop_clean: bool) -> bool:
    """``on_host_loss = "continue"``, the attempt failed on a lost host (or one that failed
    ``REPEATED_FAILURES`` attempts in a row), and the run can go on without the lost hosts (the
    master, which holds the rendezvous, is not one of them, and one host is left at least)."""
    return (config.run.on_host_loss == "continue" and final.outcome is RunOutcome.FAILED
            and final.failed_host in lost and config.cluster.master not in lost and stop_clean
            and len(lost) < len(config.hosts))


def restart_note(final: Finding, restart: int, limit: int) -> str:
    """What restart number ``restart`` (of ``limit``) after ``final`` says."""
    cause = final.detail.split("\n", 1)[0]
    return (f"restart {restart} of {limit} after: {cause}; resuming from the newest "
            "checkpoint")


def dropped_note(detail: str, lost: dict[str, HostLost], remaining: list[str],
                 global_batch: int) -> str:
    """What going on on ``remaining`` without the ``lost`` hosts says (``detail``: how the
    attempt failed)."""
    return (f"dropped {', '.join(sorted(lost))} from the run ({detail.splitlines()[0]}); "
            f"continuing on {', '.join(remaining)} from the newest checkpoint, the global "
            f"batch of {global_batch} re-split among them (`corral run --resume` later brings "
            "the host back)")


def dropped_statuses(lost: dict[str, HostLost], now: float) -> list[HostStatus]:
    """Each dropped host's ``failed`` status at ``now``: why it was lost, and its last step."""
    return [HostStatus(t=now, host=h, state="failed",
                       detail=f"dropped from the run: {gone.reason}"
                       + (f" (last step {gone.step})" if gone.step is not None else ""))
            for h, gone in sorted(lost.items())]
