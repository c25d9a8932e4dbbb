"""How long the run loop waits on what the follower saw, with no I/O (a part of
``remote/run/decide.py``): the deadlines of the attempt followed live in ``Waits``, set from the
follower's facts (``remote/run/follow_facts.py``), and ``waited`` says when one passes.

- After the first failure, its cause is waited for ``FAILURE_SETTLE_S`` at most (less once the
  cause is known: ``CauseKnown``); then the other hosts are stopped (``Settled``).
- With the hot path open to every failing host, nothing is stopped for ``HOT_PATH_WAIT_S``:
  the survivors may take the host out themselves; once that passes, the fallback is said.
- A rank the hang guard finds silent past ``hang_limit`` while nothing failed is declared hung
  (``DeclareHung``) by the process that launched the run only.
- ``DONE_GRACE_S`` after every rank finished, processes still running are ended (``Lingered``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from remote.run.deadlines import DONE_GRACE_S, FAILURE_SETTLE_S, HOT_PATH_WAIT_S
from remote.run.failures import Failure
from remote.run.follow_facts import (
    AllRanksDone,
    CauseKnown,
    Fact,
    FailureGone,
    FailureSeen,
    HangSeen,
    Tick,
)


@dataclass(frozen=True)
class Waits:
    """The deadlines of the attempt followed (times as the facts carry them, seconds)."""

    failed_at: float | None = None
    """When the first failure waited on was seen."""
    failed_host: str | None = None
    hot: bool = False
    """Every failing host may be taken out by the survivors: their event is waited for."""
    hot_said: bool = False
    cause_known: bool = False
    settled: bool = False
    """The other hosts were (or are being) stopped for the failure: once an attempt."""
    hung: bool = False
    """A hang was declared (once an attempt)."""
    done_at: float | None = None
    """When every rank had finished."""
    lingered: bool = False


@dataclass(frozen=True)
class DeclareHung:
    """Record ``hung`` as a failure of the attempt (the follower's monitor)."""

    hung: Failure


@dataclass(frozen=True)
class Settled:
    """The failure's wait is over: stop ``left``, the hosts still running."""

    cause: Failure | None
    left: tuple[str, ...]


@dataclass(frozen=True)
class Lingered:
    """Every rank finished ``waited_s`` ago but ``left`` still run: end them."""

    left: tuple[str, ...]
    waited_s: float


@dataclass(frozen=True)
class Waited:
    """What a fact did to the waits: the new ``waits``, lines to say, what passed."""

    waits: Waits
    lines: list[str]
    passed: DeclareHung | Settled | Lingered | None = None


def waited(waits: Waits, fact: Fact, *, launching: bool, run_id: str) -> Waited:
    """``waits`` after ``fact`` for run ``run_id``; ``launching``: this process launched it
    (only it stops or declares anything; following says what it sees)."""
    if isinstance(fact, FailureSeen):
        return _failure_seen(waits, fact, launching=launching, run_id=run_id)
    if isinstance(fact, FailureGone):
        return Waited(replace(waits, failed_at=None, failed_host=None, hot=False,
                              hot_said=False, cause_known=False), [])
    if isinstance(fact, CauseKnown):
        return Waited(replace(waits, cause_known=True), [])
    if isinstance(fact, HangSeen):
        if not launching or waits.hung or waits.failed_at is not None:
            return Waited(waits, [])
        return Waited(replace(waits, hung=True), [], DeclareHung(fact.hung))
    if isinstance(fact, AllRanksDone):
        return Waited(replace(waits, done_at=waits.done_at or fact.t), [])
    return _tick(waits, fact)


def _failure_seen(waits: Waits, seen: FailureSeen, *, launching: bool, run_id: str) -> Waited:
    if waits.failed_at is not None:  # another host failed: hot only while every one is
        return Waited(replace(waits, hot=waits.hot and seen.hot_path and launching), [])
    hot = seen.hot_path and launching
    waits = replace(waits, failed_at=seen.t, failed_host=seen.host, hot=hot)
    if not launching:
        return Waited(waits, [
            "a rank failed; following changes nothing on the hosts: the process that "
            f"launched the run stops the rest, or end it with `corral stop {run_id}`"])
    if hot and not waits.hot_said:
        return Waited(replace(waits, hot_said=True), [
            f"{seen.host} failed; waiting up to {HOT_PATH_WAIT_S:.0f} s for the other hosts "
            "to go on without it"])
    return Waited(waits, [])


def _tick(waits: Waits, tick: Tick) -> Waited:
    t = tick.t
    if (waits.done_at is not None and not waits.lingered and waits.failed_at is None
            and t - waits.done_at >= DONE_GRACE_S):
        return Waited(replace(waits, lingered=True), [],
                      Lingered(left=tick.running, waited_s=t - waits.done_at))
    if waits.failed_at is None or waits.settled:
        return Waited(waits, [])
    wait = HOT_PATH_WAIT_S if waits.hot else FAILURE_SETTLE_S
    if not ((waits.cause_known and not waits.hot) or t - waits.failed_at >= wait):
        return Waited(waits, [])
    lines = ([f"the other hosts did not go on within {HOT_PATH_WAIT_S:.0f} s: the live "
              "leave was not taken; falling back to stopping the run (on_host_loss)"]
             if waits.hot else [])
    return Waited(replace(waits, settled=True), lines, Settled(tick.cause, tick.running))
