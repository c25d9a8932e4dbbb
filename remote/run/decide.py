"""What the run does next: ``decide(state, signal, t) -> RunDecision``, with no I/O.

The lifecycle loop (``SshRunHandle.events``) hears a signal: what a phase reported, the
follower's facts with their times (``remote/run/follow_facts.py``; the deadlines that follow
from them live in ``LoopState.waits``: ``remote/run/decide_waits.py``), what a stop the loop made
found (``StopFound``), or the user's stop (``StopAsked``, then what it found: ``StopMade``).
``decide`` turns the ``LoopState`` and the signal into the events front ends see, the next state,
and ``Action`` records (``remote/run/actions.py``) the handle carries out in one place
(``SshRunHandle._perform``): stop hosts, unlock, every write of ``run.json`` (a
``RecordChange``), drop hosts, tell the follower. It awaits nothing, opens no file and reads no
clock (``t``: when the signal was heard; a fact's own time for a fact), and imports nothing
that does (a forbidden import contract in ``pyproject.toml``), so a decision is a row of a
table (``tests/remote/test_decide.py``). A new signal or action is a case here (and in
``_perform``).

An attempt's end is decided in two steps when the loop made a stop during it (the other hosts
after a failure, lingering processes) or sweeps for straggler ranks of a failed attempt whose
launchers all ended by themselves (only the process that launched the run stops anything;
following is read-only): ``AttemptEnded`` asks for the stop's report, ``StopFound`` settles
it. A stop that left processes says so in the outcome; a run that had ended before this
process followed it keeps its recorded outcome; the hosts where processes may be left are
recorded. Then the run ends, restarts (``[run] max_restarts``) or goes on without the hosts it
lost (``on_host_loss = "continue"``). A follower whose attempt ended without completing, where
the corral launching the run may relaunch it, first waits for that corral's word
(``AwaitOwner``, then ``OwnerDecided``): it follows the relaunch, or ends as recorded.
"""

from __future__ import annotations

from dataclasses import replace

from remote.events import (
    FINAL_RUN_STATES,
    LogLine,
    RunEvent,
    RunStatus,
    StopReport,
)
from remote.records.runs import RunInfo, describe_stop
from remote.run.actions import (
    Action,
    AwaitOwner,
    AwaitStop,
    CloseTrackers,
    DropHosts,
    EndCommands,
    LingerEnded,
    MarkStop,
    StopHosts,
    Unlock,
    UnlockAbandoned,
)
from remote.run.deadlines import DONE_GRACE_S, LAUNCH_STOP_GRACE_S, STOP_GRACE_ON_FAILURE_S
from remote.run.decide_members import members_signal
from remote.run.decide_waits import DeclareHung, Lingered, Settled, Waits, waited
from remote.run.failures import HostLost
from remote.run.follow_facts import FACTS, Fact
from remote.run.lifecycle import (
    NEXT_PHASE,
    AttemptEnded,
    Finding,
    Heard,
    JoinEnded,
    JoinLaunched,
    LaunchFailed,
    MembershipSeen,
    OwnerDecided,
    Phase,
    PhaseDone,
    RunOutcome,
    StopAsked,
    StopCause,
    StopMade,
    TailsOpen,
    check_move,
)
from remote.run.loop_state import LoopState, RunDecision
from remote.run.record_changes import (
    AskStop,
    RecordCleanup,
    RecordDropped,
    RecordLaunched,
    RecordState,
    RecordSuspects,
    suspects_after,
)
from remote.run.restart_policy import (
    REPEATED_FAILURES,
    can_go_on_without,
    count_failure,
    dropped_note,
    dropped_statuses,
    owner_relaunched,
    restart_note,
    restart_refusal,
)


def decide(state: LoopState, signal: Heard, t: float) -> RunDecision:
    """The one place that moves the run: its events, next state and actions for ``signal``,
    heard at ``t``."""
    if isinstance(signal, StopAsked):
        return _stop_asked(state, signal)
    if isinstance(signal, StopMade):
        return _stop_made(state, signal)
    if isinstance(signal, LaunchFailed):
        # A failed launch leaves nothing behind; the lock goes before the final status (its
        # reader stops reading there).
        stops: list[Action] = ([StopHosts(grace_s=LAUNCH_STOP_GRACE_S)]
                               if signal.leaves_processes else [])
        outcome = RunOutcome.STOPPED if signal.stopped else RunOutcome.FAILED
        ended = end(state, outcome, signal.detail, t, report=signal.report,
                    failed_host=signal.failed_host)
        return replace(ended, actions=[*stops, Unlock(), *ended.actions])
    if isinstance(signal, PhaseDone):
        return _phase_done(state, signal, t)
    if isinstance(signal, TailsOpen):  # a new attempt followed: its own deadlines
        return move(replace(state, waits=Waits()), Phase.RUNNING, t)
    if isinstance(signal, FACTS):
        return _fact(state, signal)
    if isinstance(signal, (MembershipSeen, JoinLaunched, JoinEnded)):
        return members_signal(state, signal, t)
    if isinstance(signal, OwnerDecided):
        return _owner_decided(state, signal, t)
    if isinstance(signal, AttemptEnded):
        if state.stop_in_flight:
            return RunDecision([], replace(state, ended=signal), [AwaitStop()])
        if state.launching and signal.final.outcome is RunOutcome.FAILED:
            # Every launcher ended by itself; make sure no straggler rank is left either.
            sweep = StopHosts(grace_s=STOP_GRACE_ON_FAILURE_S, report_back=True)
            return RunDecision([], replace(state, ended=signal), [sweep])
        if awaits_owner(state, signal.final):
            line = LogLine(t=t, host="*", rank=None, text=(
                f"this attempt {signal.final.state}; waiting for the corral that launched the "
                "run to relaunch it (`[run] max_restarts`, `on_host_loss`) or end it"))
            return RunDecision([line], replace(state, ended=signal), [AwaitOwner()])
        return _settle(state, signal, None, t)
    assert state.ended is not None, "a stop's report without an attempt's end"
    found = None if signal.report is None else (signal.report, signal.swept)
    return _settle(replace(state, ended=None, stop_in_flight=False), state.ended, found, t)


def awaits_owner(state: LoopState, final: Finding) -> bool:
    """Whether this process, following a run another corral launched (its record's owner),
    waits for that corral's word on an attempt that ended without completing: that corral
    may relaunch the run (``max_restarts``, ``on_host_loss = "continue"``), and a seat
    follows the new attempt, never ending on the old one."""
    run = state.config.run
    return (not state.launching and final.outcome is not RunOutcome.COMPLETED
            and (run.max_restarts > 0 or run.on_host_loss == "continue")
            and StopCause.REQUESTED not in state.stops
            and state.followed.state not in FINAL_RUN_STATES)


def _owner_decided(state: LoopState, decided: OwnerDecided, t: float) -> RunDecision:
    """The owner's word on the attempt followed: a new attempt is followed (its hosts, the
    record as it is now), else the run ends with the outcome its owner recorded (or, with no
    owner left, as this follower found it)."""
    ended, info = state.ended, decided.info
    assert ended is not None, "the owner's word without an attempt's end"
    relaunched = owner_relaunched(info, state.followed)
    state = replace(state, ended=None, followed=info)
    if not relaunched:
        return _settle(state, ended, None, t)
    known = state.cluster_hosts or state.config.hosts
    hosts = tuple(h for h in known if h.name in info.hosts) or state.config.hosts
    state = replace(state, config=replace(state.config, hosts=hosts),
                    stops=state.stops & {StopCause.REQUESTED})
    line = LogLine(t=t, host="*", rank=None, text=(
        "the corral that launched the run relaunched it" + (f": {info.detail}"
                                                            if info.detail else "")))
    return RunDecision([line], state, [MarkStop(None)])


def _stop_asked(state: LoopState, asked: StopAsked) -> RunDecision:
    """The user's stop: marked (the loop and the monitor ask it) and recorded as ``stopping``
    while the run is not over; told to the corral launching it when that is another process
    (``AskStop``: its launch ends between steps), whose lock goes too; then every host of the
    run is stopped, or before any launcher started, the check's and push's commands ended."""
    state = replace(state, stops=state.stops | {StopCause.REQUESTED}, asked=asked)
    actions: list[Action] = [MarkStop(StopCause.REQUESTED)]
    if asked.recorded not in FINAL_RUN_STATES:
        actions.append(RecordState(Phase.STOPPING.shown))
        if not state.launching:
            actions.append(AskStop())
    if not state.launching:
        actions.append(UnlockAbandoned())
    if launched_nothing(state):
        return RunDecision([], state, [*actions, EndCommands()])
    stop = StopHosts(grace_s=asked.grace_s, hosts=asked.hosts, asked=True)
    return RunDecision([], state, [*actions, stop])


def _stop_made(state: LoopState, made: StopMade) -> RunDecision:
    """What the user's stop found goes to the record's ``cleanup``; a run no loop of this
    process follows, stopped clean, is recorded ``stopped`` (one that ended keeps its outcome)."""
    asked = state.asked
    actions: list[Action] = [RecordCleanup(made.report)]
    if (asked is not None and not asked.following and made.report.clean
            and asked.recorded not in FINAL_RUN_STATES):
        actions.append(RecordState(RunOutcome.STOPPED.value))
    return RunDecision([], replace(state, asked=None), actions)


def launched_nothing(state: LoopState) -> bool:
    """Whether no launcher of this run was ever started: this process launches it, its first
    attempt is still checking or pushing, and no earlier launch of it (a resumed run) started
    one. Nothing of the run trains then: a stop has no grace to give and no process group to
    signal."""
    return (state.launching and state.restarts == 0 and not state.followed.pgids
            and state.phase in (Phase.CHECKING, Phase.PUSHING))


def _phase_done(state: LoopState, done: PhaseDone, t: float) -> RunDecision:
    if state.phase is Phase.LAUNCHING:  # launched: the follower takes over (``TailsOpen``)
        launched = RecordLaunched({"state": state.phase.shown, **done.facts})
        return RunDecision([], state, [launched, Unlock()])
    if state.phase is Phase.RESTARTING:  # the stop of the failed attempt is over
        state = replace(state, resume=True, stops=state.stops & {StopCause.REQUESTED})
        moved = move(state, NEXT_PHASE[state.phase], t)
        return replace(moved, actions=[MarkStop(None), *moved.actions])
    if state.phase is Phase.CHECKING and done.checked is not None:  # the mesh, for the views
        return move(state, NEXT_PHASE[state.phase], t, links=done.checked.links,
                    estimate=done.checked.estimate)
    return move(state, NEXT_PHASE[state.phase], t)


def _fact(state: LoopState, fact: Fact) -> RunDecision:
    """What the follower saw, at ``fact.t``: a deadline of the waits may pass."""
    now = waited(state.waits, fact, launching=state.launching, run_id=state.run_id)
    state = replace(state, waits=now.waits)
    said: list[RunEvent] = [LogLine(t=fact.t, host="*", rank=None, text=line)
                            for line in now.lines]
    if isinstance(now.passed, DeclareHung):
        return RunDecision(said, state, [now.passed])
    if now.passed is None:
        return RunDecision(said, state, [])
    stopping = _stop_meanwhile(state, now.passed, fact.t)
    return replace(stopping, events=[*said, *stopping.events])


def _stop_meanwhile(state: LoopState, signal: Settled | Lingered, t: float) -> RunDecision:
    """Stop the hosts still running in the background while the follower reads on: the
    other hosts after a failure, or processes lingering after every rank finished."""
    if not state.launching:
        return RunDecision([], state, [])  # following changes nothing on the hosts
    stop = StopHosts(grace_s=STOP_GRACE_ON_FAILURE_S, hosts=signal.left, meanwhile=True)
    state = replace(state, stop_in_flight=True)
    if isinstance(signal, Lingered):
        line = LogLine(t=t, host="*", rank=None, text=(
            f"every rank finished {DONE_GRACE_S:.0f} s ago but processes on "
            f"{', '.join(signal.left)} have not exited; ending them (the run completed)"))
        return RunDecision([line], state, [LingerEnded(signal.waited_s), stop])
    state = replace(state, stops=state.stops | {StopCause.FAILURE})
    who = signal.cause.host if signal.cause else "?"
    moved = move(state, Phase.STOPPING, t,
                 f"{who} failed; stopping {', '.join(signal.left) or 'nothing'}")
    return replace(moved, actions=[MarkStop(StopCause.FAILURE), stop, *moved.actions])


def _settle(state: LoopState, ended: AttemptEnded, found: tuple[StopReport, bool] | None,
            t: float) -> RunDecision:
    """The attempt's outcome (see the module's docstring), then the run ends or restarts."""
    final = ended.final
    report, swept = found if found is not None else (None, False)
    if report is not None and not swept and not report.clean:
        final = replace(final, detail=final.detail + f"\n({describe_stop(report)})")
    final = kept_outcome(final, state.followed, launching=state.launching)
    stop_clean = report is None or (
        not any(report.remaining.values()) and set(report.unreachable) <= set(ended.lost))
    suspects = (set(ended.lost) if report is None
                else suspects_after(set(ended.lost), report))
    actions: list[Action] = [CloseTrackers(final.state)]
    if suspects:
        actions.append(RecordSuspects(frozenset(suspects)))
    decision = _end_or_restart(state, final, dict(ended.lost), stop_clean, t)
    return replace(decision, actions=[*actions, *decision.actions])


def kept_outcome(final: Finding, info: RunInfo, *, launching: bool) -> Finding:
    """``final``, or for a run that had ended before this process followed it, the outcome
    and detail decided then (the launching follower saw every event; this one only the ones
    after its copy)."""
    if launching or info.state not in FINAL_RUN_STATES:
        return final
    return replace(final, outcome=RunOutcome(info.state), detail=info.detail or final.detail)


def _end_or_restart(state: LoopState, final: Finding, lost: dict[str, HostLost],
                    stop_clean: bool, t: float) -> RunDecision:
    """End the run, or restart it (perhaps without the hosts it lost)."""
    streaks, failing = count_failure(state.streaks, final)
    state = replace(state, streaks=streaks)
    if failing is not None:
        lost.setdefault(failing, HostLost(host=failing, t=t,
                                          reason=f"failed {REPEATED_FAILURES} times in a row"))
    wanted = state.launching and StopCause.REQUESTED not in state.stops
    config = state.config
    if wanted and can_go_on_without(config, final, lost, stop_clean=stop_clean):
        remaining = tuple(h for h in config.hosts if h.name not in lost)
        state = replace(state, config=replace(config, hosts=remaining,
                                              run=replace(config.run, split=None)))
        note = dropped_note(final.detail, lost, [h.name for h in remaining],
                            config.run.global_batch)
        moved = move(state, Phase.RESTARTING, t, note)
        said: list[RunEvent] = [*dropped_statuses(lost, t),
                                LogLine(t=t, host="*", rank=None, text=note)]
        return RunDecision([*said, *moved.events], moved.state,
                           [DropHosts(frozenset(lost)),
                            RecordDropped(tuple(h.name for h in remaining), frozenset(lost)),
                            *moved.actions])
    limit = config.run.max_restarts
    why = restart_refusal(final, state.restarts, limit, wanted=wanted, stop_clean=stop_clean)
    if why is not None:
        detail = final.detail if not why else f"{final.detail}\n({why})"
        return end(state, final.outcome, detail, t, failed_host=final.failed_host,
                   failed_rank=final.failed_rank)
    state = replace(state, restarts=state.restarts + 1)
    note = restart_note(final, state.restarts, limit)
    moved = move(state, Phase.RESTARTING, t, note)
    return replace(moved, events=[LogLine(t=t, host="*", rank=None, text=note), *moved.events])


def move(state: LoopState, phase: Phase, t: float, detail: str = "",
         **extra: object) -> RunDecision:
    """Move to ``phase`` (never ``ENDED``: see ``end``): its status, and its record."""
    check_move(state.run_id, state.phase, phase)
    status = RunStatus(t=t, run_id=state.run_id, state=phase.shown, detail=detail,
                       **extra)  # type: ignore[arg-type]
    return RunDecision([status], replace(state, phase=phase), [RecordState(phase.shown, detail)])


def end(state: LoopState, outcome: RunOutcome, detail: str, t: float,
        **extra: object) -> RunDecision:
    """Move to ``ENDED`` with ``outcome``: the final status, and its record."""
    check_move(state.run_id, state.phase, Phase.ENDED)
    status = RunStatus(t=t, run_id=state.run_id, state=outcome.value, detail=detail,
                       **extra)  # type: ignore[arg-type]
    return RunDecision([status], replace(state, phase=Phase.ENDED),
                       [RecordState(outcome.value, detail)])
