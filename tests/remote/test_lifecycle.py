"""The run's lifecycle: the moves it allows, what front ends see, who asked it to stop."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from remote.api import FINAL_RUN_STATES, RankEvent, RunState
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.records.runs import RunInfo
from remote.run.decide import LoopState, end, move
from remote.run.failures import Severity
from remote.run.lifecycle import (
    TRANSITIONS,
    Phase,
    RunOutcome,
    StopCause,
    StopRequest,
)
from remote.run.monitor import RunMonitor
from trainer.events import StepEvent


def _at(phase: Phase) -> LoopState:
    config = ClusterConfig(path=Path("/nonexistent/cluster.toml"),
                           cluster=ClusterSection(name="c", master="m"),
                           hosts=(HostSection(name="m", address="local"),))
    return LoopState(run_id="r", phase=phase, launching=True, config=config,
                     followed=RunInfo(run_id="r", cluster="c", started=1.0, hosts=("m",),
                                     state="checking"))


def test_a_launch_that_fails_its_check_and_one_that_restarts_make_only_listed_moves() -> None:
    state = _at(Phase.CHECKING)
    seen = [state.phase.shown]
    for phase in (Phase.PUSHING, Phase.LAUNCHING, Phase.RUNNING, Phase.STOPPING,
                  Phase.RESTARTING, Phase.CHECKING):
        moved = move(state, phase, 1.0, f"to {phase.value}")
        state = moved.state
        seen.append(moved.events[0].state)  # type: ignore[union-attr]
    final = end(state, RunOutcome.FAILED, "pre-flight check failed: h1:disk\nmore", 1.0)
    assert seen == ["checking", "pushing", "launching", "running", "stopping", "launching",
                    "checking"]  # a restart shows as launching
    assert final.events[0].state == "failed"  # type: ignore[union-attr]
    assert final.state.phase is Phase.ENDED
    with pytest.raises(RuntimeError, match="no move from ended to checking"):
        move(final.state, Phase.CHECKING, 1.0)


def test_moves_that_skip_a_phase_are_refused() -> None:
    with pytest.raises(RuntimeError, match="no move from checking to running"):
        move(_at(Phase.CHECKING), Phase.RUNNING, 1.0)
    with pytest.raises(RuntimeError, match="cannot end while restarting"):
        end(_at(Phase.RESTARTING), RunOutcome.COMPLETED, "", 1.0)


def test_every_phase_shows_as_a_state_front_ends_know_and_outcomes_are_final() -> None:
    assert set(Phase) == set(TRANSITIONS)
    shown = {phase.shown for phase in Phase if phase is not Phase.ENDED}
    assert shown | FINAL_RUN_STATES | {"idle"} == set(get_args(RunState))
    assert not shown & FINAL_RUN_STATES
    assert {o.value for o in RunOutcome} == FINAL_RUN_STATES
    with pytest.raises(ValueError, match="shows as its outcome"):
        _ = Phase.ENDED.shown


def test_a_restart_forgets_the_failure_stop_but_not_a_requested_one() -> None:
    stop = StopRequest()
    stop.request(StopCause.FAILURE)
    stop.next_attempt()
    assert not stop.requested
    stop.request(StopCause.REQUESTED)
    stop.request(StopCause.ELSEWHERE)
    stop.next_attempt()
    assert stop.requested and stop.by(StopCause.REQUESTED) and not stop.by(StopCause.ELSEWHERE)


def test_a_lost_host_is_recorded_with_its_last_step_and_no_failure_after_a_stop() -> None:
    stop = StopRequest()
    monitor = RunMonitor(run_id="r", hosts=("a", "b"), stop=stop)
    monitor.observe(RankEvent(host="b", event=StepEvent(
        t=1.0, rank=1, step=7, epoch=0, local_batch=4, loss=0.5, compute_s=0.05, step_s=0.1,
        samples_per_s=40.0)))
    monitor.observe(monitor.lost("b", ConnectionError("connection lost")))
    assert monitor.dropped["b"].step == 7 and monitor.dropped["b"].reason == "connection lost"
    cause = monitor.first_failure()
    assert cause is not None and cause.severity is Severity.HOST_LOST
    later = RunMonitor(run_id="r", hosts=("a",), stop=stop)
    stop.request(StopCause.REQUESTED)  # asked of the handle; its monitor sees it
    later.observe(later.lost("a", ConnectionError("gone")))
    assert later.first_failure() is None
