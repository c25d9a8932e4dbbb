"""What can go wrong in a run, as typed records: a lost host, a failure and how much it explains.

``RunMonitor`` collects ``Failure`` records while a run is followed and names the one with the
lowest ``Severity`` (the earliest among equals) as the run's cause; ``HostLost`` says that a
host's tail gave up (its connection stayed lost past ``[ssh] lost_after``), or that the
controller dropped a host that failed attempt after attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum


class Severity(IntEnum):
    """How directly a failure explains the run's end; the lowest is named as the cause (the
    others usually follow from it: ranks fail when a peer vanishes)."""

    DISK_FULL = 0
    """A host's launcher ended with the run directory's disk full (its ranks could write
    neither events nor last words there; the peers then fail with "connection closed"), or
    this machine could not write the run's records (the hosts are stopped for it)."""
    LAUNCHER_KILLED = 1
    """A host's launcher (or its container) was killed: no rank of its own is named, and its
    ranks die with it (``trainer.launcher_death``); the peers' failures follow from that."""
    RANK_DIED = 2
    """A rank ended without its ``end`` event (killed, crashed) or was declared hung."""
    HOST_LOST = 3
    """Its host dropped; the peers' errors follow from that."""
    RANK_WAITED = 4
    """A rank ended as stuck at its start while it waited in a collective for others
    (``trainer.launch_contract.WAITING_STATUS``): the rank it waited for is the cause."""
    RANK_FAILED = 5
    """A rank ended ``failed`` or ``diverged`` (often because a peer vanished)."""
    LAUNCHER_FAILED = 6
    """A launcher failed without naming a rank."""


class Cause(Enum):
    """What a failure was, as far as launching the run again from its checkpoint goes."""

    OTHER = "other"
    """A rank died, a host was lost, a launcher failed: a restart may get past it."""
    DIVERGED = "diverged"
    """The loss went non-finite: it would again from the same checkpoint."""
    DISK_FULL = "disk full"
    """The run directory's disk filled up: it is still full."""
    LOCAL_WRITE = "local write"
    """This machine could not write the run's records (read-only, full, gone): a restart
    would have nowhere to record either."""


@dataclass(frozen=True, kw_only=True)
class HostLost:
    """A host that left the run: its connection stayed lost, or it kept failing."""

    host: str
    reason: str
    t: float
    """Wall-clock time it was declared lost."""
    step: int | None = None
    """The last step any of its ranks reported, if one did."""


@dataclass(frozen=True, kw_only=True)
class Failure:
    """One thing that failed in an attempt: where, when, how directly, and why."""

    host: str
    rank: int | None
    t: float
    severity: Severity
    why: str
    cause: Cause = Cause.OTHER

    @property
    def sort_key(self) -> tuple[Severity, float]:
        """The cause is the failure with the smallest key: most direct first, then earliest."""
        return (self.severity, self.t)
