"""What ``decide`` (``remote/run/decide.py``) asks the run's handle to do, as records: each
action does one thing, and ``SshRunHandle._perform`` alone carries it out."""

from __future__ import annotations

from dataclasses import dataclass

from remote.events import RunState
from remote.run.decide_waits import DeclareHung
from remote.run.lifecycle import StopCause
from remote.run.record_changes import RecordChange, RecordMembers


@dataclass(frozen=True)
class StopHosts:
    """Stop the run's processes (TERM, ``grace_s``, KILL, verified)."""

    grace_s: float
    hosts: tuple[str, ...] | None = None
    """None: every host of the run."""
    meanwhile: bool = False
    """In the background while the follower reads on (``AwaitStop`` reads what it found)."""
    report_back: bool = False
    """What it found comes back as ``StopFound(swept=True)`` (the straggler sweep)."""
    asked: bool = False
    """The user's stop: every host of the run, the dropped ones too; what it found comes back
    as ``StopMade``."""


@dataclass(frozen=True)
class EndCommands:
    """The user's stop before any launcher started: end what the check and the push started
    on the hosts (their channels), and wait for the hosts' word; what they said comes back as
    ``StopMade``."""


@dataclass(frozen=True)
class UnlockAbandoned:
    """Release the run's launch lock taken by another corral (a stop of its run: that corral
    may be dead)."""


@dataclass(frozen=True)
class AwaitStop:
    """Wait for the stop made meanwhile; what it found comes back as ``StopFound``."""


@dataclass(frozen=True)
class AwaitOwner:
    """Following a run another corral launched, whose attempt ended without completing: wait
    until its record says what that corral made of it; the record comes back as
    ``OwnerDecided``."""


@dataclass(frozen=True)
class Unlock:
    """Release the launch lock if this handle holds it (the launch is over)."""


@dataclass(frozen=True)
class MarkStop:
    """Tell the run's ``StopRequest`` (the follower and its monitor ask it): the run is being
    stopped for ``cause``, or (None) a restart begins and only a stop asked for stays."""

    cause: StopCause | None


@dataclass(frozen=True)
class DropHosts:
    """Go on without ``lost``: the run's connections are the new config's (its record is a
    ``RecordDropped`` of its own)."""

    lost: frozenset[str]


@dataclass(frozen=True)
class LingerEnded:
    """Tell the follower the lingering processes are being ended (the run completed)."""

    waited_s: float


@dataclass(frozen=True)
class CloseTrackers:
    """Close the follower's trackers with the attempt's final ``state`` (their lines are
    said before the decision's own events)."""

    state: RunState





@dataclass(frozen=True)
class MembersChanged:
    """Tell the follower: ``left`` hosts left the run live (their launchers' ends and their
    tails' losses are no failures), ``joined`` hosts are in it."""

    left: frozenset[str]
    joined: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TailJoiner:
    """Follow ``host``, which ``corral join`` launched: its tail joins the run's, and its
    launcher's end before rank 0 lets it in is a failed join (``JoinEnded``), not the run's."""

    host: str


@dataclass(frozen=True)
class ForgetJoin:
    """The join of ``host`` is settled (let in, refused or failed): its join record goes."""

    host: str


@dataclass(frozen=True)
class StopJoiner:
    """Stop what runs of ``host``'s join (the run ended before rank 0 let it in)."""

    host: str


MembersAction = RecordMembers | MembersChanged | TailJoiner | ForgetJoin | StopJoiner


Action = StopHosts | AwaitStop | AwaitOwner | Unlock | RecordChange | MarkStop | DropHosts \
    | LingerEnded | CloseTrackers | MembersAction | DeclareHung | EndCommands | UnlockAbandoned
"""Everything ``decide`` asks the handle to do, in order, before its events are said."""
