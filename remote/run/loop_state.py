"""What the run loop knows between signals (``LoopState``) and what a signal leads to
(``RunDecision``): the shapes ``decide`` and ``decide_members`` both take and return."""

from __future__ import annotations

from dataclasses import dataclass, field

from remote.config.cluster import ClusterConfig, HostSection
from remote.events import RunEvent
from remote.records.runs import RunInfo
from remote.run.actions import Action
from remote.run.decide_waits import Waits
from remote.run.lifecycle import AttemptEnded, Phase, StopAsked, StopCause


@dataclass(frozen=True)
class LoopState:
    """What the loop knows between signals."""

    run_id: str
    phase: Phase
    launching: bool
    """This process launched the run (following one changes nothing on the hosts)."""
    config: ClusterConfig
    """The run's cluster, less the hosts dropped with ``on_host_loss``."""
    followed: RunInfo
    """The record as it was when this process began to follow the run."""
    resume: bool = False
    """The next launch resumes from the newest checkpoint (a restart always does)."""
    restarts: int = 0
    streaks: dict[str, int] = field(default_factory=dict)
    """Per host, its attempts failed in a row (``count_failure``)."""
    stops: frozenset[StopCause] = frozenset()
    """Why the loop is stopping the run (the handle's ``StopRequest`` is told: ``MarkStop``;
    its monitor adds what it sees there)."""
    stop_in_flight: bool = False
    """A stop started during the attempt runs on (``StopHosts.meanwhile``)."""
    ended: AttemptEnded | None = None
    """The attempt's end, while the loop waits for what its stop found."""
    left: frozenset[str] = frozenset()
    """Hosts that left the run live (``membership`` events): not in ``config`` any more."""
    cluster_hosts: tuple[HostSection, ...] = ()
    """Every host of cluster.toml (where a joiner's section comes from)."""
    joining: frozenset[str] = frozenset()
    """Hosts ``corral join`` launched that rank 0 has not let in yet (in ``config``)."""
    waits: Waits = field(default_factory=Waits)
    """The deadlines of the attempt followed (``remote/run/decide_waits.py``)."""
    asked: StopAsked | None = None
    """The user's stop under way (its ``StopMade`` is recorded from it)."""


@dataclass(frozen=True)
class RunDecision:
    """What a signal leads to."""

    events: list[RunEvent]
    state: LoopState
    actions: list[Action]
