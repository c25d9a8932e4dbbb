"""The run's lifecycle: the moves it allows, what front ends see, who asked it to stop."""

from __future__ import annotations

from typing import get_args

import pytest

from remote.api import FINAL_RUN_STATES, RankEvent, RunState
from remote.run.failures import Severity
from remote.run.lifecycle import (
    TRANSITIONS,
    Lifecycle,
    Phase,
    RunOutcome,
    StopCause,
    StopRequest,
)
from remote.run.monitor import RunMonitor
from trainer.events import StepEvent


def test_a_launch_that_fails_its_check_and_one_that_restarts_make_only_listed_moves() -> None:
    life = Lifecycle("r", Phase.CHECKING, None)
    seen = [life.announce().state]
    for phase in (Phase.PUSHING, Phase.LAUNCHING, Phase.RUNNING, Phase.STOPPING,
                  Phase.RESTARTING, Phase.CHECKING):
        seen.append(life.move(phase, f"to {phase.value}").state)
    final = life.end(RunOutcome.FAILED, "pre-flight check failed: h1:disk\nmore")
    assert seen == ["checking", "pushing", "launching", "running", "stopping", "launching",
                    "checking"]  # a restart shows as launching
    assert final.state == "failed" and life.phase is Phase.ENDED
    with pytest.raises(RuntimeError, match="no move from ended to checking"):
        life.move(Phase.CHECKING)


def test_moves_that_skip_a_phase_are_refused() -> None:
    life = Lifecycle("r", Phase.CHECKING, None)
    with pytest.raises(RuntimeError, match="no move from checking to running"):
        life.move(Phase.RUNNING)
    life = Lifecycle("r", Phase.RESTARTING, None)
    with pytest.raises(RuntimeError, match="cannot end while restarting"):
        life.end(RunOutcome.COMPLETED, "")


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
