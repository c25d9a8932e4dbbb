"""A seat following a run another corral launched (``corral attach``, a ``--serve`` tab, the
console) when an attempt ends without completing: it waits for that corral's word
(``AwaitOwner``) instead of ending on the old attempt, then follows the relaunch or ends with the
outcome that corral recorded; rows of ``decide``, and the wait on the record itself."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from remote.config.cluster import ClusterConfig
from remote.events import LogLine, RunStatus
from remote.records.runs import FOLLOWING_LOST, RunInfo, write_run_info
from remote.run import actions as act
from remote.run import lifecycle as sig
from remote.run.decide import LoopState, decide
from remote.run.lifecycle import Finding, Phase, RunOutcome, StopCause
from remote.run.record import RunRecord
from remote.run.record_changes import RecordState
from remote.run.restart_policy import owner_relaunched

try:
    from test_decide import FAILED, RUN, T, _fold, _info, _state
except ImportError:  # collected as a package
    from tests.remote.test_decide import (  # type: ignore[no-redef]
        FAILED,
        RUN,
        T,
        _fold,
        _info,
        _state,
    )

FIRST = {"h0": 101, "h1": 102, "h2": 103}
"""The process groups of the attempt the seat followed."""
AGAIN = {"h0": 201, "h1": 202}
"""Those of the relaunch, on h0 and h1 (h2 dropped: ``on_host_loss = "continue"``)."""
ENDED = sig.AttemptEnded(final=FAILED, lost={})
COMPLETED = Finding(RunOutcome.COMPLETED, "3 rank(s) finished")
STOPPED = Finding(RunOutcome.STOPPED, "stopped elsewhere")


def _record(state: str, pgids: dict[str, int], *, detail: str = "", owner: str = "m 1 1",
            hosts: tuple[str, ...] = ("h0", "h1", "h2")) -> RunInfo:
    return replace(_info(state, detail), pgids=pgids, owner=owner, hosts=hosts)


def _seat(*, restarts: int = 1, on_host_loss: str = "stop",
          followed: RunInfo | None = None) -> LoopState:
    state = _state(launching=False, restarts=restarts, on_host_loss=on_host_loss,
                   followed=followed or _record("running", FIRST))
    return replace(state, cluster_hosts=state.config.hosts)


@pytest.mark.parametrize(("seat", "final", "waits"), [
    (_seat(), FAILED, True),  # the launching corral may relaunch it
    (_seat(), STOPPED, True),  # its stop after a failure or a hang reads as stopped here
    (_seat(restarts=0, on_host_loss="continue"), FAILED, True),  # may go on without a host
    (_seat(), COMPLETED, False),  # nothing to relaunch
    (_seat(restarts=0), FAILED, False),  # no relaunch configured: ends as before
    (_seat(followed=_record("failed", FIRST)), FAILED, False),  # had ended: its outcome kept
    (replace(_state(restarts=1), followed=_record("running", FIRST)), FAILED, False),  # its own
])
def test_a_follower_waits_for_the_launching_corral_where_it_may_relaunch(
        seat: LoopState, final: Finding, waits: bool) -> None:
    decision = decide(seat, sig.AttemptEnded(final=final, lost={}), T)
    assert (act.AwaitOwner() in decision.actions) is waits
    if waits:  # nothing ends, nothing is recorded: it says what it waits for
        assert decision.state.ended is not None and decision.state.phase is Phase.RUNNING
        assert not [a for a in decision.actions if isinstance(a, RecordState)]
        assert [type(e) for e in decision.events] == [LogLine]
        assert "waiting for the corral that launched the run" in decision.events[0].text  # type: ignore[union-attr]


def test_a_follower_whose_user_stops_the_run_does_not_wait() -> None:
    seat = replace(_seat(), stops=frozenset({StopCause.REQUESTED}))
    _, state, actions = _fold(seat, ENDED)
    assert act.AwaitOwner() not in actions and state.phase is Phase.ENDED


def test_a_relaunch_is_followed_on_its_hosts_with_its_record() -> None:
    note = "restart 1 of 1 after: h1 rank 1 died; resuming from the newest checkpoint"
    relaunched = _record("launching", AGAIN, detail=note, hosts=("h0", "h1"))
    seat = replace(_seat(), stops=frozenset({StopCause.ELSEWHERE}))
    events, state, actions = _fold(seat, ENDED, sig.OwnerDecided(relaunched))
    assert act.MarkStop(None) in actions  # the old attempt's stop is not the new one's
    assert not state.stops and state.ended is None and state.phase is Phase.RUNNING
    assert state.followed == relaunched
    assert [h.name for h in state.config.hosts] == ["h0", "h1"]
    assert isinstance(events[-1], LogLine) and events[-1].text.endswith(note)
    assert not [e for e in events if isinstance(e, RunStatus)]  # the owner records the moves
    events, state, _ = _fold(state, sig.TailsOpen())
    assert events[-1].state == "running"  # type: ignore[union-attr]


@pytest.mark.parametrize(("word", "outcome", "detail"), [
    # The launching corral ended the run: its outcome and detail (it saw every event).
    (_record("completed", AGAIN, detail="2 rank(s) finished"), "completed", "2 rank(s) finished"),
    (_record("failed", FIRST, detail="no restart left"), "failed", "no restart left"),
    # Nobody launches it any more: as this follower found it.
    (_record("running", FIRST, detail=f"{FOLLOWING_LOST}: ..."), "failed", FAILED.detail),
])
def test_otherwise_the_run_ends_as_the_launching_corral_recorded(
        word: RunInfo, outcome: str, detail: str) -> None:
    events, state, actions = _fold(_seat(), ENDED, sig.OwnerDecided(word))
    assert state.phase is Phase.ENDED and events[-1].state == outcome  # type: ignore[union-attr]
    assert events[-1].detail == detail  # type: ignore[union-attr]
    assert act.CloseTrackers(outcome) in actions  # type: ignore[arg-type]


@pytest.mark.parametrize(("now", "relaunched"), [
    (_record("running", FIRST), False),  # the same attempt
    (_record("launching", FIRST), False),
    (_record("checking", {}), False),  # restarting: nothing launched yet
    (_record("launching", AGAIN), True),  # every launcher of the relaunch started
    (_record("running", AGAIN), True),
    (_record("running", AGAIN, detail=f"{FOLLOWING_LOST}: ..."), False),  # nobody follows it
    (_record("completed", AGAIN), False),
])
def test_what_counts_as_a_relaunch(now: RunInfo, relaunched: bool) -> None:
    assert owner_relaunched(now, _record("running", FIRST)) is relaunched


def _config(tmp_path: Path) -> ClusterConfig:
    config = _state().config
    return replace(config, cluster=replace(config.cluster, run_root=str(tmp_path / "runs")))


async def test_the_wait_reads_the_record_until_the_launching_corral_said(
        tmp_path: Path) -> None:
    config, followed = _config(tmp_path), _record("running", FIRST)
    (tmp_path / "runs" / RUN).mkdir(parents=True)
    write_run_info(config, replace(followed, state="launching", pgids={}))  # restarting
    record = RunRecord(config, followed)
    waiting = asyncio.create_task(record.owner_decided(followed))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiting.done()  # read once: nothing said yet
    write_run_info(config, _record("running", AGAIN))
    assert (await asyncio.wait_for(waiting, 60.0)).pgids == AGAIN
    write_run_info(config, _record("completed", AGAIN))
    assert (await record.owner_decided(followed)).state == "completed"
    write_run_info(config, _record("running", FIRST))
    record.info = replace(followed, detail=f"{FOLLOWING_LOST}: ...")
    record.adopt()  # this process follows it now: nobody else relaunches it
    assert (await record.owner_decided(followed)).pgids == FIRST
