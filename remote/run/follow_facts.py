"""What the follower of an attempt reports to the run loop: facts, each with the time it was
seen (``t``, wall clock, seconds). The follower decides nothing on the clock; ``decide`` keeps
the deadlines that follow from these facts in the loop's state (``decide_waits.Waits``) and says
when waiting ends: a failure's cause settled, the hot path's wait given up, a hang declared,
lingering processes ended."""

from __future__ import annotations

from dataclasses import dataclass

from remote.run.failures import Failure


@dataclass(frozen=True)
class FailureSeen:
    """``host`` failed (its first failure of the attempt; a failure of a host that left live
    is none)."""

    host: str
    t: float
    hot_path: bool
    """The survivors may take ``host`` out in their own processes (``hot_path_refusal`` is
    None): the loop waits for their ``membership`` event before it stops anything."""


@dataclass(frozen=True)
class FailureGone:
    """Every host that failed left the run live: no failure is waited on any more."""

    t: float


@dataclass(frozen=True)
class CauseKnown:
    """The failures seen name their cause: waiting longer would not change it."""

    t: float


@dataclass(frozen=True)
class HangSeen:
    """The hang guard finds ``hung`` silent past ``[run] hang_limit`` while nothing failed."""

    hung: Failure
    t: float


@dataclass(frozen=True)
class AllRanksDone:
    """Every rank wrote its completed ``end`` event (its processes may still run)."""

    t: float


@dataclass(frozen=True)
class Tick:
    """Time passed (``t``): the follower's view now, for a deadline that passes."""

    t: float
    running: tuple[str, ...]
    """Hosts whose launcher has not ended."""
    cause: Failure | None
    """The failure named first so far (None: none)."""


Fact = FailureSeen | FailureGone | CauseKnown | HangSeen | AllRanksDone | Tick
"""Every timed fact the follower reports."""
FACTS = (FailureSeen, FailureGone, CauseKnown, HangSeen, AllRanksDone, Tick)
"""``Fact``'s members, for ``isinstance``."""
