"""What the run does next, as tables of ``(state, signal) -> events, state, actions``: no
handle, no SSH, no clock (``decide`` is pure; ``t`` comes with the signal)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection, SshSection
from remote.events import HostStatus, LogLine, RunEvent, RunStatus, StopReport
from remote.records.runs import RunInfo
from remote.run import actions as act
from remote.run import follow_facts as ff
from remote.run import lifecycle as sig
from remote.run.deadlines import (
    DONE_GRACE_S,
    FAILURE_SETTLE_S,
    HOT_PATH_WAIT_S,
    LAUNCH_STOP_GRACE_S,
    STOP_GRACE_ON_FAILURE_S,
)
from remote.run.decide import (
    Action,
    LoopState,
    decide,
    kept_outcome,
)
from remote.run.decide_waits import DeclareHung, Waits
from remote.run.failures import Cause, Failure, HostLost, Severity
from remote.run.lifecycle import (
    Finding,
    Heard,
    Phase,
    RunOutcome,
    StopCause,
)
from remote.run.record_changes import (
    AskStop,
    RecordCleanup,
    RecordDropped,
    RecordLaunched,
    RecordState,
    RecordSuspects,
)

RUN = "rep-20260101-000001-aaaaaa"
T = 1234.5
FAILED = Finding(RunOutcome.FAILED, "h1 rank 1 died", failed_host="h1", failed_rank=1,
                 cause=Cause.OTHER)
SWEEP = act.StopHosts(grace_s=STOP_GRACE_ON_FAILURE_S, report_back=True)


def _info(state: str, detail: str = "") -> RunInfo:
    return RunInfo(run_id=RUN, cluster="rep", state=state, started=1.0,
                   hosts=("h0", "h1", "h2"), detail=detail)


def _lost(host: str) -> HostLost:
    return HostLost(host=host, t=1.0, reason="unreachable")


def _state(*, launching: bool = True, phase: Phase = Phase.RUNNING, restarts: int = 0,
           on_host_loss: str = "stop", followed: RunInfo | None = None) -> LoopState:
    """A run of three hosts (h0 the master) in ``phase``."""
    hosts = tuple(HostSection(name=f"h{i}", address=f"10.9.0.{i + 1}", user="u",
                              python="python3", workdir="/tmp/w", gpus=0, nproc=1)
                  for i in range(3))
    config = ClusterConfig(
        path=Path("/nonexistent/cluster.toml"),
        cluster=ClusterSection(name="rep", master="h0", run_root="/nonexistent/runs"),
        hosts=hosts, run=RunSection(max_restarts=restarts, on_host_loss=on_host_loss),
        ssh=SshSection(known_hosts_file="/nonexistent/known_hosts",
                       config_file="/nonexistent/ssh-config"))
    return LoopState(run_id=RUN, phase=phase, launching=launching, config=config,
                     followed=followed or _info("running"))


def _fold(state: LoopState, *signals: Heard) -> tuple[list[RunEvent], LoopState, list[Action]]:
    """Every event, the last state and every action of ``signals`` decided in turn."""
    events: list[RunEvent] = []
    actions: list[Action] = []
    for signal in signals:
        decision = decide(state, signal, T)
        for status in [e for e in decision.events if isinstance(e, RunStatus)]:
            assert RecordState(status.state, status.detail) in decision.actions  # recorded
        events, state, actions = ([*events, *decision.events], decision.state,
                                  [*actions, *decision.actions])
    assert all(e.t == T for e in events)  # no clock read: the signal's time
    return events, state, actions


def _ended(events: list[RunEvent]) -> RunStatus:
    assert isinstance(events[-1], RunStatus)
    return events[-1]


def _stops(actions: list[Action]) -> list[act.StopHosts]:
    return [a for a in actions if isinstance(a, act.StopHosts)]


def _suspects(actions: list[Action]) -> set[str]:
    written = [a.hosts for a in actions if isinstance(a, RecordSuspects)]
    return set(written[-1]) if written else set()


@pytest.mark.parametrize(("lost", "report", "clean", "suspects"), [
    # A lost host is a suspect but does not make the stop unclean (it cannot be reached).
    ({"h1": _lost("h1")}, StopReport(run_id=RUN, unreachable=("h1",)), True, {"h1"}),
    ({}, StopReport(run_id=RUN, remaining={"h0": 2, "h1": 0}), False, {"h0"}),
    ({}, None, True, set()),  # following: no stop, no sweep, no restarts to wait for
])
def test_what_may_be_left_of_an_attempt(lost: dict[str, HostLost], report: StopReport | None,
                                        clean: bool, suspects: set[str]) -> None:
    state = _state(restarts=0 if report is None else 3, launching=report is not None)
    signals: list[Heard] = [sig.AttemptEnded(final=FAILED, lost=lost)]
    if report is not None:  # the stop made during the attempt
        state = replace(state, stop_in_flight=True)
        signals.append(sig.StopFound(report, swept=False))
    events, _, actions = _fold(state, *signals)
    assert _suspects(actions) == suspects
    refused = "processes of the failed attempt may be left"
    assert (refused not in _ended(events).detail) is clean


def test_a_followed_run_that_had_ended_keeps_its_recorded_outcome() -> None:
    recorded = _info("completed", "every rank completed")
    assert kept_outcome(FAILED, recorded, launching=False).outcome is RunOutcome.COMPLETED
    assert kept_outcome(FAILED, recorded, launching=False).detail == "every rank completed"
    assert kept_outcome(FAILED, recorded, launching=True) == FAILED  # it saw every event
    assert kept_outcome(FAILED, _info("running"), launching=False) == FAILED
    events, _, actions = _fold(_state(launching=False, followed=recorded),
                               sig.AttemptEnded(final=FAILED, lost={}))
    assert _ended(events).state == "completed" and act.CloseTrackers("completed") in actions


@pytest.mark.parametrize(("launching", "in_flight", "swept"), [
    (True, False, True),  # every launcher ended by itself: stragglers are looked for
    (False, False, False),  # following is read-only
    (True, True, False),  # the failure stop already looked
])
def test_only_the_launching_process_sweeps_a_failed_attempt_it_did_not_stop(
        launching: bool, in_flight: bool, swept: bool) -> None:
    state = replace(_state(launching=launching), stop_in_flight=in_flight)
    decision = decide(state, sig.AttemptEnded(final=FAILED, lost={}), T)
    assert (SWEEP in decision.actions) is swept
    assert (act.AwaitStop() in decision.actions) is in_flight
    completed = sig.AttemptEnded(final=Finding(RunOutcome.COMPLETED, "2 rank(s) finished"), lost={})
    assert not _stops(decide(_state(), completed, T).actions)
    if swept:
        found = sig.StopFound(StopReport(run_id=RUN, remaining={"h0": 1}), swept=True)
        events, _, actions = _fold(decision.state, found)
        assert events[-1] == RunStatus(t=T, run_id=RUN, state="failed", detail=FAILED.detail,
                                       failed_host="h1", failed_rank=1)  # sweep not said
        assert _suspects(actions) == {"h0"}


def test_a_stop_that_left_processes_says_so_in_the_outcome() -> None:
    state = replace(_state(), stop_in_flight=True)
    events, _, actions = _fold(state, sig.AttemptEnded(final=FAILED, lost={}),
                               sig.StopFound(StopReport(run_id=RUN, remaining={"h1": 3}),
                                         swept=False))
    detail = _ended(events).detail
    assert detail.startswith("h1 rank 1 died\n(") and "h1" in detail.splitlines()[1]
    assert _suspects(actions) == {"h1"}
    assert actions.index(act.CloseTrackers("failed")) < actions.index(RecordState("failed", detail))


def test_the_loop_decides_every_stop_of_an_attempt() -> None:
    # Launchers that all ended by themselves: the straggler sweep, then the end.
    events, _, actions = _fold(_state(), sig.AttemptEnded(final=FAILED, lost={}),
                               sig.StopFound(StopReport(run_id=RUN), swept=True))
    assert _ended(events).state == "failed" and _stops(actions) == [SWEEP]

    failed = sig.LaunchFailed("launch failed on h1: refused", failed_host="h1",
                              may_have_started=True)
    events, state, actions = _fold(_state(phase=Phase.LAUNCHING), failed)
    assert _ended(events).state == "failed" and state.phase is Phase.ENDED
    # The lock goes before the final status is recorded (its reader stops reading there).
    assert actions == [act.StopHosts(grace_s=LAUNCH_STOP_GRACE_S), act.Unlock(),
                       RecordState("failed", failed.detail)]


def _tick(after_s: float) -> ff.Tick:
    return ff.Tick(T + after_s, running=("h0", "h2"), cause=None)


SEEN, HOT_SEEN = ff.FailureSeen("h1", T, hot_path=False), ff.FailureSeen("h1", T, hot_path=True)
SETTLE = act.StopHosts(grace_s=STOP_GRACE_ON_FAILURE_S, hosts=("h0", "h2"), meanwhile=True)


@pytest.mark.parametrize(("facts", "stops_at", "said"), [
    pytest.param([SEEN, ff.CauseKnown(T + 1), _tick(1)], 2, "", id="settle: the cause known"),
    pytest.param([SEEN, _tick(FAILURE_SETTLE_S - 0.5), _tick(FAILURE_SETTLE_S)], 2, "",
                 id="settle: its wait passed"),
    pytest.param([HOT_SEEN, ff.CauseKnown(T + 1), _tick(1), _tick(HOT_PATH_WAIT_S - 0.5),
                  _tick(HOT_PATH_WAIT_S)], 4, "did not go on within 20 s: the live leave was "
                 "not taken; falling back", id="hot path: waited, then the fallback"),
    pytest.param([HOT_SEEN, ff.FailureGone(T + 5), _tick(HOT_PATH_WAIT_S + 1)], None,
                 "h1 failed; waiting up to 20 s for the other hosts", id="hot path: taken"),
    pytest.param([HOT_SEEN, ff.FailureSeen("h0", T + 1, hot_path=False),
                  ff.CauseKnown(T + 1), _tick(1)], 3, "", id="hot path: closed by the master"),
    pytest.param([ff.AllRanksDone(T), _tick(DONE_GRACE_S - 0.5), _tick(DONE_GRACE_S)], 2,
                 "every rank finished 60 s ago but processes on h0, h2 have not exited",
                 id="linger"),
    pytest.param([ff.AllRanksDone(T), _tick(DONE_GRACE_S), ff.AllRanksDone(T + 70),
                  _tick(DONE_GRACE_S + 70)], 1, "", id="linger: ended once"),
])
def test_the_loop_keeps_the_follower_s_deadlines(facts: list[ff.Fact], stops_at: int | None,
                                                 said: str) -> None:
    """The follower reports what it saw and when; the loop says when waiting ends: a
    failure's cause settled, the hot path's wait and its fallback, lingering processes."""
    for launching in (True, False):
        state, stopped, lines = _state(launching=launching), [], []
        for i, fact in enumerate(facts):
            decision = decide(state, fact, T - 100)  # the fact's own time counts
            state = decision.state
            stopped += [(i, a) for a in decision.actions if isinstance(a, act.StopHosts)]
            lines += [e.text for e in decision.events if isinstance(e, LogLine)]
            assert all(e.t == fact.t for e in decision.events)
        if not launching:  # following changes nothing on the hosts
            assert stopped == [] and not state.stops
            continue
        assert stopped == ([] if stops_at is None else [(stops_at, SETTLE)])
        assert not said or any(said in line for line in lines), lines
        lingered = isinstance(facts[0], ff.AllRanksDone)  # the run still completed
        assert (state.phase is Phase.STOPPING) is (stops_at is not None and not lingered)


def test_the_stop_of_a_failure_and_of_lingering_processes() -> None:
    facts: list[Heard] = [SEEN, ff.CauseKnown(T), _tick(0)]
    events, state, actions = _fold(_state(), *facts)
    assert _ended(events).state == "stopping" and state.phase is Phase.STOPPING
    assert actions[0] == act.MarkStop(StopCause.FAILURE)  # before the stop starts
    assert _stops(actions) == [SETTLE] and state.stop_in_flight
    events, state, actions = _fold(_state(), ff.AllRanksDone(T - 61), _tick(0))
    assert "processes on h0, h2 have not exited; ending them" in events[0].text  # type: ignore[union-attr]
    assert actions == [act.LingerEnded(61.0), SETTLE]
    assert not state.stops and state.stop_in_flight  # the run still completed
    _, following, _ = _fold(_state(launching=False), SEEN)
    assert "`corral stop rep-20260101-000001-aaaaaa`" in decide(
        _state(launching=False), SEEN, T).events[0].text  # type: ignore[union-attr]
    assert following.waits.failed_at == T


HUNG = Failure(host="h1", rank=1, t=T, severity=Severity.RANK_DIED, why="hung: no step")


@pytest.mark.parametrize(("launching", "before", "declared"), [
    (True, [], True),
    (True, [ff.HangSeen(HUNG, T - 1)], False),  # declared once
    (True, [SEEN], False),  # a failure is waited on already: its cause comes first
    (False, [], False),  # only the launching process declares a hang
])
def test_a_hang_is_declared_once_by_the_launching_process(launching: bool, before: list[Heard],
                                                          declared: bool) -> None:
    state = _fold(_state(launching=launching), *before)[1] if before else _state(
        launching=launching)
    actions = decide(state, ff.HangSeen(HUNG, T), T).actions
    assert (actions == [DeclareHung(HUNG)]) is declared
    assert declared or actions == []


def test_a_new_attempt_has_deadlines_of_its_own() -> None:
    _, state, _ = _fold(_state(), SEEN, ff.AllRanksDone(T))
    assert state.waits.failed_at == T
    _, state, _ = _fold(replace(state, phase=Phase.LAUNCHING), sig.TailsOpen())
    assert state.waits == Waits()


def test_a_launch_moves_through_its_phases_and_records_its_facts() -> None:
    state = _state(phase=Phase.CHECKING)
    events, state, actions = _fold(state, sig.PhaseDone(), sig.PhaseDone())
    assert [e.state for e in events if isinstance(e, RunStatus)] == ["pushing", "launching"]
    assert actions == [RecordState("pushing"), RecordState("launching")]
    events, state, actions = _fold(state, sig.PhaseDone(facts={"port": 29500}), sig.TailsOpen())
    assert actions == [RecordLaunched({"state": "launching", "port": 29500}), act.Unlock(),
                       RecordState("running")]
    assert state.phase is Phase.RUNNING


def test_a_failed_attempt_restarts_then_runs_out_of_restarts() -> None:
    events, state, actions = _fold(_state(restarts=1), sig.AttemptEnded(final=FAILED, lost={}),
                                   sig.StopFound(StopReport(run_id=RUN), swept=True))
    note = "restart 1 of 1 after: h1 rank 1 died; resuming from the newest checkpoint"
    assert isinstance(events[-2], LogLine) and events[-2].text == note
    assert _ended(events).state == "launching" and state.phase is Phase.RESTARTING
    assert state.restarts == 1 and RecordState("launching", note) in actions
    events, state, actions = _fold(replace(state, stops=frozenset(StopCause)), sig.PhaseDone())
    assert state.resume and state.phase is Phase.CHECKING
    assert state.stops == {StopCause.REQUESTED} and actions[0] == act.MarkStop(None)
    state = replace(state, stops=frozenset())
    state = replace(state, phase=Phase.RUNNING)
    events, state, _ = _fold(state, sig.AttemptEnded(final=FAILED, lost={}),
                             sig.StopFound(StopReport(run_id=RUN), swept=True))
    assert _ended(events).state == "failed" and state.phase is Phase.ENDED
    assert _ended(events).detail.endswith("(no restart left: [run] max_restarts = 1)")


def test_a_lost_host_is_dropped_and_the_batch_re_split() -> None:
    state = _state(restarts=1, on_host_loss="continue")
    lost = {"h2": HostLost(host="h2", t=1.0, reason="unreachable", step=7)}
    failed = replace(FAILED, failed_host="h2")
    events, state, actions = _fold(state, sig.AttemptEnded(final=failed, lost=lost),
                                   sig.StopFound(StopReport(run_id=RUN, unreachable=("h2",)),
                                             swept=True))
    assert [h.name for h in state.config.hosts] == ["h0", "h1"]
    assert state.config.run.split is None and state.restarts == 0
    assert act.DropHosts(frozenset({"h2"})) in actions  # its connections; its record:
    assert RecordDropped(("h0", "h1"), frozenset({"h2"})) in actions
    dropped = [e for e in events if isinstance(e, HostStatus)]
    assert dropped == [HostStatus(t=T, host="h2", state="failed",
                                  detail="dropped from the run: unreachable (last step 7)")]
    assert _ended(events).state == "launching" and state.phase is Phase.RESTARTING


def test_a_host_failing_twice_in_a_row_is_dropped_like_a_lost_one() -> None:
    state = _state(restarts=5, on_host_loss="continue")
    for _ in range(2):
        state = replace(state, phase=Phase.RUNNING)
        _, state, actions = _fold(state, sig.AttemptEnded(final=FAILED, lost={}),
                                  sig.StopFound(StopReport(run_id=RUN), swept=True))
    assert act.DropHosts(frozenset({"h1"})) in actions and state.restarts == 1


HOSTS = ("h0", "h1", "h2")
WHOLE = act.StopHosts(grace_s=10.0, hosts=HOSTS, asked=True)


@pytest.mark.parametrize(("launching", "phase", "restarts", "recorded", "then"), [
    pytest.param(True, Phase.RUNNING, 3, "running",
                 [RecordState("stopping"), WHOLE], id="the launching process, running"),
    pytest.param(True, Phase.CHECKING, 0, "checking",
                 [RecordState("stopping"), act.EndCommands()], id="no launcher started yet"),
    pytest.param(True, Phase.PUSHING, 0, "pushing",
                 [RecordState("stopping"), act.EndCommands()], id="pushing"),
    pytest.param(True, Phase.LAUNCHING, 0, "launching",
                 [RecordState("stopping"), WHOLE], id="a launch began: the whole stop"),
    pytest.param(True, Phase.CHECKING, 1, "launching",
                 [RecordState("stopping"), WHOLE], id="a restart's check: an attempt ran"),
    pytest.param(False, Phase.RUNNING, 0, "running",
                 [RecordState("stopping"), AskStop(), act.UnlockAbandoned(), WHOLE],
                 id="another process launched it: told, its lock released"),
    pytest.param(False, Phase.RUNNING, 0, "completed", [act.UnlockAbandoned(), WHOLE],
                 id="an ended run keeps its outcome"),
])
def test_a_user_s_stop_is_a_signal_answered_with_actions(
        launching: bool, phase: Phase, restarts: int, recorded: str,
        then: list[Action]) -> None:
    asked = sig.StopAsked(recorded=recorded, hosts=HOSTS, grace_s=10.0)
    state = replace(_state(launching=launching), phase=phase, restarts=restarts)
    _, state, actions = _fold(state, asked)
    assert actions == [act.MarkStop(StopCause.REQUESTED), *then]
    assert state.stops == {StopCause.REQUESTED} and state.asked == asked
    found = StopReport(run_id=RUN, remaining={"h0": 0})
    _, state, actions = _fold(state, sig.StopMade(found))  # no loop follows it here
    stopped = [RecordState("stopped")] if recorded not in ("completed",) else []
    assert actions == [RecordCleanup(found), *stopped] and state.asked is None


def test_a_resumed_run_s_stop_while_checking_is_the_whole_one() -> None:
    """Its earlier launch's processes may be on the hosts (a cut-off host's, say)."""
    resumed = replace(_info("running"), pgids={"h0": 4242})
    state = replace(_state(followed=resumed), phase=Phase.CHECKING)
    actions = decide(state, sig.StopAsked(recorded="checking", hosts=HOSTS), T).actions
    assert actions[-1] == WHOLE


def test_a_stop_asked_is_recorded_and_never_restarted() -> None:
    asked = sig.StopAsked(recorded="running", hosts=HOSTS, following=True)
    _, state, _ = _fold(_state(restarts=3), asked)
    _, _, actions = _fold(state, sig.StopMade(StopReport(run_id=RUN, remaining={"h0": 0})))
    assert RecordState("stopped") not in actions  # the loop that follows it records the end
    events, state, actions = _fold(state, sig.AttemptEnded(final=FAILED, lost={}),
                                   sig.StopFound(StopReport(run_id=RUN), swept=True))
    assert _ended(events).state == "failed" and _ended(events).detail == FAILED.detail
    _, _, actions = _fold(state, sig.StopMade(StopReport(run_id=RUN, remaining={"h0": 2})))
    assert actions == [RecordCleanup(StopReport(run_id=RUN, remaining={"h0": 2}))]


def test_the_decision_does_no_io() -> None:
    """No await, no clock, no file, no process in ``decide``'s module (its times come with
    the signal, its I/O is the handle's ``_perform``)."""
    import ast
    import inspect

    import remote.run.decide as module

    tree = ast.parse(inspect.getsource(module))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Await, ast.AsyncFunctionDef))]
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom)}
    assert not imported & {"asyncio", "time", "os", "subprocess", "shutil", "pathlib", "asyncssh"}
    called = {n.func.id for n in ast.walk(tree)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "open" not in called
