"""The run's lifecycle: its states, the moves allowed between them, and who asked it to stop.

A run launched by this process goes ``checking → pushing → launching → running``, perhaps
``→ stopping`` (the other hosts are stopped after a failure), and then either ``→ ended`` with
a ``RunOutcome`` (completed, failed, stopped) or, with ``[run] max_restarts``, ``→ restarting →
checking`` for another attempt from the newest checkpoint. A failed check, push or launch goes
straight to ``ended`` (failed). A run that is only followed (``attach``) starts in ``running``.

``SshRunHandle.events`` (``remote/run/handle.py``) is the loop that moves between these
states from what each phase reports (the signals here; the monitor's ``Finding`` for an
attempt that ended): ``remote/run/decide.py`` decides each move, ``check_move`` refuses any
move ``TRANSITIONS`` does not list. One vocabulary: a phase shows as ``Phase.shown``
(a ``RunState``) and an outcome is ``remote.events.RunOutcome``, whose values are the final
``RunState``s (``FINAL_RUN_STATES`` is derived from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from remote.config.cluster import HostSection
from remote.events import CheckReport, RunOutcome, RunState, StopReport
from remote.records.runs import RunInfo
from remote.run.failures import Cause, HostLost
from remote.run.follow_facts import Fact
from trainer.events import MembershipEvent


class Phase(Enum):
    """Where a run is in its lifecycle."""

    CHECKING = "checking"
    PUSHING = "pushing"
    LAUNCHING = "launching"
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    ENDED = "ended"

    @property
    def shown(self) -> RunState:
        """The ``RunStatus`` state front ends see in this phase: its own name, but a restart
        shows as ``launching`` (with the restart's reason as its detail); ``ended`` shows as
        its outcome, never as itself."""
        if self is Phase.ENDED:
            raise ValueError("an ended run shows as its outcome")
        return "launching" if self is Phase.RESTARTING else self.value



TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.CHECKING: frozenset({Phase.PUSHING, Phase.ENDED}),
    Phase.PUSHING: frozenset({Phase.LAUNCHING, Phase.ENDED}),
    Phase.LAUNCHING: frozenset({Phase.RUNNING, Phase.ENDED}),
    Phase.RUNNING: frozenset({Phase.RUNNING, Phase.STOPPING, Phase.RESTARTING, Phase.ENDED}),
    Phase.STOPPING: frozenset({Phase.RESTARTING, Phase.ENDED}),
    Phase.RESTARTING: frozenset({Phase.CHECKING}),
    Phase.ENDED: frozenset(),
}
"""The moves a run may make. ``running → running`` announces the run again (a follower that
attached says so once its tails are open)."""


def check_move(run_id: str, source: Phase, target: Phase) -> None:
    """Refuse (``RuntimeError``) a move ``TRANSITIONS`` does not list."""
    if target in TRANSITIONS[source]:
        return
    if target is Phase.ENDED:
        raise RuntimeError(f"run {run_id}: cannot end while {source.value}")
    raise RuntimeError(f"run {run_id}: no move from {source.value} to {target.value}")


class StopCause(Enum):
    """Why a run is being stopped."""

    REQUESTED = "requested"
    """This process was asked to stop it (``corral stop``, the console's stop key, Ctrl-C)."""
    ELSEWHERE = "elsewhere"
    """A launcher reported that it was stopped (by another process, or by this one)."""
    FAILURE = "failure"
    """The other hosts are stopped because one failed."""


@dataclass
class StopRequest:
    """The one place that holds whether the run is being stopped, and why; the handle, the
    follower and the monitor ask it."""

    causes: set[StopCause] = field(default_factory=set)

    def request(self, cause: StopCause) -> None:
        """Record that the run is being stopped for ``cause``."""
        self.causes.add(cause)

    @property
    def requested(self) -> bool:
        """True once the run is being stopped for any cause (later failures are its
        consequences, not causes)."""
        return bool(self.causes)

    def by(self, cause: StopCause) -> bool:
        """Whether the run is being stopped for ``cause``."""
        return cause in self.causes

    def next_attempt(self) -> None:
        """A restart begins: the stop of the failed attempt is over; one asked for stays."""
        self.causes &= {StopCause.REQUESTED}


NEXT_PHASE: dict[Phase, Phase] = {
    Phase.CHECKING: Phase.PUSHING, Phase.PUSHING: Phase.LAUNCHING,
    Phase.RESTARTING: Phase.CHECKING,
}
"""Where a phase that did its work leads (the others end on what the follower reports)."""


@dataclass(frozen=True)
class PhaseDone:
    """A phase did its work without failing."""

    checked: CheckReport | None = None
    """After the check: its report (the mesh's links and the estimate, for the views)."""
    facts: dict[str, object] = field(default_factory=dict)
    """After the launch: the facts it recorded (master, port, process groups, code digest)."""


class LaunchFailed(Exception):
    """A check, push or launch phase failed: the run ends ``failed`` with ``detail``."""

    def __init__(self, detail: str, *, report: CheckReport | None = None,
                 failed_host: str | None = None, stopped: bool = False,
                 may_have_started: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.report = report
        self.failed_host = failed_host
        self.stopped = stopped
        """A stop was asked (``corral stop`` from another process): the run ends ``stopped``."""
        self.may_have_started = may_have_started
        """Processes of this launch may run on the hosts (a launcher started, or the phase
        broke off): the loop stops them before the run ends."""

    @property
    def leaves_processes(self) -> bool:
        """Whether hosts may run processes of the launch that the loop must stop (a stopped
        launch too: hosts may have started since the stop looked)."""
        return self.stopped or self.may_have_started


@dataclass(frozen=True)
class TailsOpen:
    """The follower reads every reachable host's events: the run is running."""


@dataclass(frozen=True)
class Finding:
    """How an attempt ended, as its monitor found it: the lifecycle alone turns it into the
    run's final state (``remote.run.decide``)."""

    outcome: RunOutcome
    detail: str
    """For ``failed``: the first failing host and rank and why; otherwise a short note."""
    failed_host: str | None = None
    failed_rank: int | None = None
    cause: Cause = Cause.OTHER
    """For ``failed``: what the failure was (the restart decision reads it, not ``detail``)."""

    @property
    def state(self) -> RunState:
        """The final ``RunState`` this finding ends the run in."""
        return self.outcome.value


@dataclass(frozen=True)
class AttemptEnded:
    """Every host's launcher ended (or its host was lost): how this attempt ended, as its
    follower saw it (the loop decides what that means, with what its own stops found:
    ``remote/run/decide.py``)."""

    final: Finding
    lost: dict[str, HostLost]


@dataclass(frozen=True)
class MembershipSeen:
    """Rank 0 reported a change of the run's membership (its ``membership`` event): hosts
    joined, left or were refused while the ranks trained on (``remote/run/decide_members.py``)."""

    event: MembershipEvent


@dataclass(frozen=True)
class JoinLaunched:
    """``corral join`` started ``host``'s launcher for this run (its join record,
    ``remote/run/join.py``): the host is counted in the run and followed, ``joining`` until
    rank 0 lets it in."""

    host: str
    pgid: int
    """Its launcher's process group."""
    asked: float
    """When the join was asked (wall clock)."""
    section: HostSection | None = None
    """The host's ``[[hosts]]`` entry when the run's cluster, as this process loaded it, has
    none: cluster.toml got the host since (a machine added while the run trains)."""


@dataclass(frozen=True)
class JoinEnded:
    """A joiner's launcher ended (or its host was lost) before rank 0 let it in: the join
    failed, the run goes on as it was."""

    host: str
    detail: str
    """What was seen (its launcher's status, the lost connection)."""
    running: bool = False
    """Its processes may still run (the run ended before it was let in): they are stopped."""


Signal = (PhaseDone | LaunchFailed | TailsOpen | Fact | AttemptEnded | MembershipSeen
          | JoinLaunched | JoinEnded)
"""What a phase reports to the lifecycle loop, which alone decides the next phase (the
follower's facts, ``remote/run/follow_facts.py``, among them)."""


@dataclass(frozen=True)
class StopFound:
    """What the stop the loop asked for at an attempt's end found (None: none was made)."""

    report: StopReport | None
    swept: bool
    """It was the straggler sweep (not the stop made during the attempt)."""


@dataclass(frozen=True)
class OwnerDecided:
    """A run another corral launched, followed here: its record once that corral (the
    record's owner) said what it made of the attempt that ended (``AwaitOwner``): the run
    ended, another attempt was launched, or nobody launches it any more."""

    info: RunInfo


@dataclass(frozen=True)
class StopAsked:
    """The user asked this process to stop the run (``stop``: ``corral stop``, the stop key,
    Ctrl-C)."""

    recorded: str
    """The state ``run.json`` holds now: a run that ended keeps its outcome."""
    hosts: tuple[str, ...] = ()
    """Every host of the run, the dropped and the left ones too (all may hold processes)."""
    grace_s: float = 10.0
    """Seconds between TERM and KILL (a low-communication run's round included: ``stop_wait``)."""
    following: bool = False
    """A loop of this process follows the run: its end records the outcome."""


@dataclass(frozen=True)
class StopMade:
    """What the user's stop found on the hosts (or, before any launcher started, the hosts'
    word on the check's and push's commands)."""

    report: StopReport


Answer = StopFound | StopMade | OwnerDecided
"""What an action the loop performed answers with: a signal decided on next
(``SshRunHandle._heard``)."""
Heard = Signal | StopAsked | Answer
"""Every signal ``remote.run.decide.decide`` takes: a phase's, and the loop's own."""
