"""What an attempt's end means, decided by the lifecycle loop from what its follower saw.

The follower reports ``AttemptEnded``: the monitor's ``Finding`` and the hosts it lost. The loop
adds what its own stops found: the stop it started during the attempt (the other hosts after a
failure, or processes lingering after every rank finished), and the sweep for straggler ranks
of a failed attempt whose launchers all ended by themselves (``straggler_sweep_wanted``: only
the process that launched the run sweeps; following is read-only). ``settle_attempt`` turns that
into the attempt's outcome: a stop that left processes says so in the detail; a run that had
already ended before this process followed it keeps its recorded outcome (that follower saw
only the events after its copy); and the hosts where processes may be left are named
(``Leftovers``). The restart decision reads the result (``remote/run/recovery.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from remote.events import FINAL_RUN_STATES, StopReport
from remote.records.runs import RunInfo, describe_stop
from remote.run.failures import HostLost
from remote.run.lifecycle import AttemptEnded, Finding, RunOutcome


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


def straggler_sweep_wanted(ended: AttemptEnded, stop: StopReport | None, *,
                           launching: bool) -> bool:
    """Whether the loop sweeps the hosts for straggler ranks: the attempt failed, every
    launcher ended by itself (no stop was made during it), and this process launched the run
    (following changes nothing on the hosts)."""
    return stop is None and launching and ended.final.outcome is RunOutcome.FAILED


def settle_attempt(ended: AttemptEnded, *, stop: StopReport | None, swept: StopReport | None,
                   launching: bool, info: RunInfo) -> tuple[Finding, Leftovers]:
    """The attempt's outcome and what may be left of it (see the module's docstring), from
    what the stop made during the attempt found (``stop``) or else the straggler sweep
    (``swept``)."""
    final = ended.final
    if stop is not None and not stop.clean:
        final = replace(final, detail=final.detail + f"\n({describe_stop(stop)})")
    return (kept_outcome(final, info, launching=launching),
            leftovers(ended.lost, stop if stop is not None else swept))
