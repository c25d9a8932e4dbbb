"""What the run does next, as tables of ``(state, signal) -> events, state, actions``: no
handle, no SSH, no clock (``decide`` is pure; ``t`` comes with the signal)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection, SshSection
from remote.events import HostStatus, LogLine, RunEvent, RunStatus, StopReport
from remote.records.runs import RunInfo
from remote.run import decide as act
from remote.run import lifecycle as sig
from remote.run.deadlines import LAUNCH_STOP_GRACE_S, STOP_GRACE_ON_FAILURE_S
from remote.run.decide import (
    Action,
    LoopState,
    decide,
    kept_outcome,
)
from remote.run.decide_members import (
    ForgetJoin,
    MembersChanged,
    StopJoiner,
    TailJoiner,
    hot_path_refusal,
)
from remote.run.failures import Cause, HostLost
from remote.run.lifecycle import (
    Finding,
    Heard,
    Phase,
    RunOutcome,
    StopCause,
)
from remote.run.record_changes import (
    AskStop,
    RecordLaunched,
    RecordMembers,
    RecordState,
    RecordSuspects,
)
from trainer.events import MembershipEvent

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
    ({}, None, True, set()),
])
def test_what_may_be_left_of_an_attempt(lost: dict[str, HostLost], report: StopReport | None,
                                        clean: bool, suspects: set[str]) -> None:
    state = _state(restarts=3, launching=report is not None)  # following: no stop, no sweep
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
    events, state, actions = _fold(_state(), sig.RanksLinger(left=("h1",), waited_s=61.0))
    assert isinstance(events[0], LogLine)
    assert "processes on h1 have not exited; ending them" in events[0].text
    assert actions == [act.LingerEnded(61.0), act.StopHosts(grace_s=STOP_GRACE_ON_FAILURE_S,
                                                    hosts=("h1",), meanwhile=True)]
    assert not state.stops and state.stop_in_flight  # the run still completed

    events, state, actions = _fold(_state(), sig.CauseSettled(cause=None, left=("h1",)))
    assert _ended(events).state == "stopping" and state.phase is Phase.STOPPING
    assert state.stops == {StopCause.FAILURE}
    assert actions[0] == act.MarkStop(StopCause.FAILURE)  # before the stop starts
    assert _stops(actions) == [act.StopHosts(grace_s=STOP_GRACE_ON_FAILURE_S, hosts=("h1",),
                                         meanwhile=True)]

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

    following = _state(launching=False)  # following changes nothing on the hosts
    for signal in (sig.RanksLinger(left=("h1",), waited_s=61.0), sig.CauseSettled(cause=None,
                                                                           left=("h1",))):
        assert decide(following, signal, T).events == []
        assert decide(following, signal, T).actions == []
    assert not _stops(_fold(following, sig.AttemptEnded(final=FAILED, lost={}))[2])


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
    assert act.DropHosts(frozenset({"h2"})) in actions
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


def test_a_stop_asked_is_recorded_and_never_restarted() -> None:
    _, state, actions = _fold(_state(restarts=3), sig.StopAsked(recorded="running"))
    assert state.stops == {StopCause.REQUESTED}
    assert actions == [act.MarkStop(StopCause.REQUESTED), RecordState("stopping"), AskStop()]
    events, state, actions = _fold(state, sig.AttemptEnded(final=FAILED, lost={}),
                                   sig.StopFound(StopReport(run_id=RUN), swept=True))
    assert _ended(events).state == "failed" and _ended(events).detail == FAILED.detail
    _, state, actions = _fold(_state(), sig.StopAsked(recorded="completed"))
    assert actions == [act.MarkStop(StopCause.REQUESTED)]  # its outcome stays
    assert state.stops == {StopCause.REQUESTED}


def test_the_decision_does_no_io() -> None:
    """No await, no clock, no file, no process in ``decide``'s module (its times come with
    the signal, its I/O is the handle's ``_carry_out``)."""
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


def _membership(change: str, hosts: tuple[str, ...], *, step: int = 7,
                cause: str | None = None, generation: int = 1,
                world_size: int = 2) -> sig.MembershipSeen:
    return sig.MembershipSeen(MembershipEvent(
        t=T, rank=0, generation=generation, step=step, change=change,  # type: ignore[arg-type]
        hosts=hosts, cause=cause, world_size=world_size, seconds_to_step=1.5,
        reason="wrong torch" if change == "refused" else None))


def _names(state: LoopState) -> tuple[str, ...]:
    return tuple(h.name for h in state.config.hosts)


@pytest.mark.parametrize(("before_left", "seen", "hosts", "left", "status", "detail"), [
    ((), _membership("left", ("h2",), cause="asked"), ("h0", "h1"), ("h2",), "left",
     "left at step 7 (asked)"),
    ((), _membership("left", ("h1",), cause="ranks_died"), ("h0", "h2"), ("h1",), "left",
     "left at step 7 (ranks_died)"),
    (("h2",), _membership("joined", ("h2",), step=12, generation=2, world_size=3),
     ("h0", "h1", "h2"), (), "running", "joined at step 12"),
])
def test_a_membership_change_is_said_recorded_and_told_to_the_follower_without_a_restart(
        before_left: tuple[str, ...], seen: sig.MembershipSeen, hosts: tuple[str, ...],
        left: tuple[str, ...], status: str, detail: str) -> None:
    state = _state(on_host_loss="continue")
    state = replace(state, cluster_hosts=state.config.hosts, left=frozenset(before_left),
                    config=replace(state.config, hosts=tuple(
                        h for h in state.config.hosts if h.name not in before_left)))
    events, after, actions = _fold(state, seen)
    assert after.phase is Phase.RUNNING and _names(after) == hosts  # no stop, no restart
    assert after.left == frozenset(left)
    changed = frozenset(seen.event.hosts)
    assert actions == [RecordMembers(hosts=hosts, left=left),
                       MembersChanged(left=changed if status == "left" else frozenset(),
                                          joined=frozenset() if status == "left" else changed)]
    assert events[0] == HostStatus(t=T, host=seen.event.hosts[0], state=status,  # type: ignore[arg-type]
                                   detail=detail)
    assert isinstance(events[1], LogLine) and f"generation {seen.event.generation}" in \
        events[1].text and "1.5 s" in events[1].text


def test_a_refused_join_leaves_the_run_untouched_and_names_why() -> None:
    state = _state(on_host_loss="continue")
    events, after, actions = _fold(state, _membership("refused", ("h2",)))
    assert after == state and actions == []
    assert [e.text for e in events if isinstance(e, LogLine)] == [
        "join of h2 refused: wrong torch; the run goes on unchanged"]


@pytest.mark.parametrize(("on_host_loss", "port", "host", "why"), [
    ("continue", 31000, "h1", None),
    ("continue", 31000, "h0", "h0 is the master's host"),
    ("continue", 0, "h1", "no live membership"),
    ("stop", 31000, "h1", 'on_host_loss = "stop"'),
])
def test_the_hot_path_is_taken_where_it_can_be_and_the_fallback_names_why(
        on_host_loss: str, port: int, host: str, why: str | None) -> None:
    state = _state(on_host_loss=on_host_loss)
    info = replace(_info("running"), membership_port=port)
    refusal = hot_path_refusal(state.config, info, host)
    assert refusal is None if why is None else why in (refusal or "")


def _two_and_a_joiner() -> LoopState:
    """h0 and h1 train; h2 (of cluster.toml) is not in the run: it left at step 3."""
    state = _state(on_host_loss="continue")
    return replace(state, cluster_hosts=state.config.hosts, left=frozenset({"h2"}),
                   config=replace(state.config, hosts=state.config.hosts[:2]))


LAUNCHED = sig.JoinLaunched(host="h2", pgid=4242, asked=T - 20.0)


@pytest.mark.parametrize(("after_launch", "hosts", "status", "said", "forgotten"), [
    ((), ("h0", "h1", "h2"), "joining", "launcher started (pgid 4242) 20.0 s after", ()),
    ((_membership("joined", ("h2",), generation=2, world_size=3),),
     ("h0", "h1", "h2"), "running", "h2 joined at step 7", ("h2",)),
    ((sig.JoinEnded(host="h2", detail="its launcher ended with status 1"),), ("h0", "h1"),
     "failed", "join of h2 failed: its launcher ended with status 1", ("h2",)),
    ((_membership("refused", ("h2",)),),
     ("h0", "h1"), "failed", "join of h2 failed: refused by rank 0: wrong torch", ("h2",)),
    # the launcher's end after rank 0 let it in is no failed join: nothing said or done
    ((_membership("joined", ("h2",)), sig.JoinEnded(host="h2", detail="status 0")),
     ("h0", "h1", "h2"), "running", "h2 joined at step 7", ("h2",)),
])
def test_a_join_is_counted_followed_then_let_in_or_taken_out_again(
        after_launch: tuple[Heard, ...], hosts: tuple[str, ...], status: str, said: str,
        forgotten: tuple[str, ...]) -> None:
    events, after, actions = _fold(_two_and_a_joiner(), LAUNCHED, *after_launch)
    assert after.phase is Phase.RUNNING and _names(after) == hosts  # no stop, no restart
    assert (after.left, after.joining) == (frozenset(), {"h2"} if status == "joining" else set())
    # counted in the run at once (a stop reaches it, it is no host that left), then settled
    records = [a for a in actions if isinstance(a, RecordMembers)]
    assert records[0] == RecordMembers(hosts=("h0", "h1", "h2"), left=())
    assert records[-1] == RecordMembers(hosts=hosts, left=())
    assert TailJoiner("h2") in actions and not _stops(actions)
    assert [a.host for a in actions if isinstance(a, ForgetJoin)] == list(forgotten)
    states = [e.state for e in events if isinstance(e, HostStatus)]
    assert (states[0], states[-1]) == ("joining", status)
    assert any(said in e.text for e in events if isinstance(e, LogLine))


def test_a_join_record_of_a_host_in_the_run_is_only_forgotten() -> None:
    state = _state(on_host_loss="continue")
    events, after, actions = _fold(state, LAUNCHED)
    assert events == [] and after == state and actions == [ForgetJoin("h2")]


def test_a_joiner_the_run_ended_without_is_stopped_and_taken_out() -> None:
    ended = sig.JoinEnded("h2", detail="the run ended before rank 0 let it in", running=True)
    events, after, actions = _fold(_two_and_a_joiner(), LAUNCHED, ended)
    assert _names(after) == ("h0", "h1") and after.joining == frozenset()
    assert actions[-3:] == [StopJoiner("h2"), RecordMembers(hosts=("h0", "h1"), left=()),
                            ForgetJoin("h2")]
    assert "join of h2 failed: the run ended before rank 0 let it in" in events[-1].text  # type: ignore[union-attr]
