"""The lifecycle is the one writer of ``run.json``: every move it allows is recorded as the
state front ends see, a move it refuses changes no byte, and a resume that is refused or fails
its check leaves every record as it was (the earlier run is never recorded as failed for it)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.events import RunStatus, StopReport
from remote.records.owner import this_owner
from remote.records.runs import (
    FOLLOWING_LOST,
    RunInfo,
    local_run_dir,
    read_run_info,
    run_dir_for,
    write_run_info,
)
from remote.run.controller import SshRunController
from remote.run.decide import LoopState, RunDecision, decide, end, move
from remote.run.lifecycle import (
    TRANSITIONS,
    MembershipSeen,
    Phase,
    PhaseDone,
    RunOutcome,
    StopAsked,
    TailsOpen,
)
from remote.run.record import STOP_ASKED, RunRecord
from remote.run.record_changes import ClearStopMark, RecordAdopted, RecordChange, RecordState
from trainer.events import MembershipEvent
from trainer.run_layout import RunLayout

try:
    from runkit import stand_in_rank
except ImportError:  # collected as a package
    from tests.remote.runkit import stand_in_rank  # type: ignore[no-redef]


def _config(tmp_path: Path, *, python: str = sys.executable) -> ClusterConfig:
    host = HostSection(name="m", address="local", python=python,
                       workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
    return ClusterConfig(path=tmp_path / "cluster.toml",
                         cluster=ClusterSection(name="c", master="m",
                                                run_root=str(tmp_path / "runs")),
                         hosts=(host,))


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _recorded_at(config: ClusterConfig, phase: Phase) -> tuple[LoopState, RunRecord]:
    """The loop in ``phase`` and its run's record, as front ends saw it there."""
    info = RunInfo(run_id="c-1", cluster="c", started=1.0, hosts=("m",),
                   state=phase.shown, detail="before")
    write_run_info(config, info)
    return _loop(config, phase, info), RunRecord(config, info)


def _loop(config: ClusterConfig, phase: Phase, info: RunInfo) -> LoopState:
    return LoopState(run_id=info.run_id, phase=phase, launching=True, config=config,
                     followed=info)


def _recorded(record: RunRecord, decision: RunDecision) -> RunStatus:
    """``decision``'s changes of the record made (as the handle's ``_perform`` does); its
    status."""
    for action in decision.actions:
        assert isinstance(action, RecordState)
        record.apply(action)
    status = decision.events[-1]
    assert isinstance(status, RunStatus)
    return status


EDGES = [(source, target) for source, targets in TRANSITIONS.items()
         for target in sorted(targets, key=lambda p: p.value)]


@pytest.mark.parametrize(("source", "target"), EDGES,
                         ids=[f"{s.value}-{t.value}" for s, t in EDGES])
def test_every_move_is_recorded_as_the_state_front_ends_see(
        tmp_path: Path, source: Phase, target: Phase) -> None:
    config = _config(tmp_path)
    if target is Phase.ENDED:
        for outcome in RunOutcome:
            state, record = _recorded_at(config, source)
            status = _recorded(record, end(state, outcome, f"{outcome.value}: why\nmore lines",
                                           1.0))
            recorded = read_run_info(config, "c-1")
            assert (recorded.state, recorded.detail) == (outcome.value, f"{outcome.value}: why")
            assert status.state == outcome.value and status.detail.endswith("more lines")
        return
    state, record = _recorded_at(config, source)
    status = _recorded(record, move(state, target, 1.0, f"to {target.value}"))
    recorded = read_run_info(config, "c-1")
    assert recorded.state == status.state == target.shown
    assert recorded.detail == f"to {target.value}"


@pytest.mark.parametrize("source", list(Phase), ids=[p.value for p in Phase])
def test_a_refused_move_changes_no_byte_of_the_record(tmp_path: Path, source: Phase) -> None:
    config = _config(tmp_path)
    if source is Phase.ENDED:
        write_run_info(config, RunInfo(run_id="c-1", cluster="c", started=1.0, hosts=("m",),
                                       state="completed"))
        state = _loop(config, Phase.ENDED, read_run_info(config, "c-1"))
    else:
        state, _ = _recorded_at(config, source)
    before = _tree(tmp_path / "runs")
    for target in set(Phase) - TRANSITIONS[source] - {Phase.ENDED}:
        with pytest.raises(RuntimeError):
            move(state, target, 1.0)
    if Phase.ENDED not in TRANSITIONS[source]:
        with pytest.raises(RuntimeError):
            end(state, RunOutcome.FAILED, "no", 1.0)
    assert _tree(tmp_path / "runs") == before


def test_the_launch_facts_stop_and_cleanup_are_recorded_through_the_loops_decisions(
        tmp_path: Path) -> None:
    config = _config(tmp_path)
    state, record = _recorded_at(config, Phase.LAUNCHING)
    launched = decide(state, PhaseDone(facts={"master_addr": "10.0.0.1", "port": 29500,
                                              "pgids": {"m": 42}, "code_digest": "abc"}), 1.0)
    for action in launched.actions:
        if isinstance(action, RecordChange):
            record.apply(action)
    recorded = read_run_info(config, "c-1")
    assert (recorded.state, recorded.pgids, recorded.port) == ("launching", {"m": 42}, 29500)
    moved = decide(launched.state, TailsOpen(), 1.0)
    _recorded(record, moved)
    for action in decide(moved.state, StopAsked(recorded="running"), 1.0).actions:
        if isinstance(action, RecordChange):
            record.apply(action)
    assert read_run_info(config, "c-1").state == "stopping"
    record.cleanup(StopReport(run_id="c-1", remaining={"m": 0}))
    record.apply(RecordState(RunOutcome.STOPPED.value))  # the stop of a run nothing follows
    recorded = read_run_info(config, "c-1")
    assert recorded.state == "stopped" and recorded.cleanup.startswith("stopped: no process")
    assert recorded.pgids == {"m": 42}  # the stop kept what the launch recorded


def test_following_an_ended_run_keeps_its_outcome(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ended = RunInfo(run_id="c-1", cluster="c", started=1.0, hosts=("m",), state="failed",
                    detail="rank 0 died")
    write_run_info(config, ended)
    record = RunRecord(config, ended, outcome_kept=True)
    state = replace(_loop(config, Phase.RUNNING, ended), launching=False)
    moved = move(state, Phase.RUNNING, 1.0)
    _recorded(record, moved)
    _recorded(record, end(moved.state, RunOutcome.COMPLETED, "1 rank(s) finished", 1.0))
    assert read_run_info(config, "c-1") == ended


def _with_checkpoint(config: ClusterConfig, info: RunInfo) -> None:
    write_run_info(config, info)
    checkpoints = Path(RunLayout(run_dir_for(config, info.run_id)).path(RunLayout.CHECKPOINTS))
    checkpoints.mkdir(parents=True)
    (checkpoints / "step-4.pt").write_bytes(b"weights")


async def test_resume_without_a_run_while_a_newer_run_is_live_is_refused_touching_nothing(
        tmp_path: Path) -> None:
    config = _config(tmp_path)
    older = RunInfo(run_id="c-20261122-000000-aaaaaa", cluster="c", state="completed",
                    started=1.0, hosts=("m",), detail="1 rank(s) finished")
    _with_checkpoint(config, older)
    newer = RunInfo(run_id="c-20261122-000100-bbbbbb", cluster="c", state="running",
                    started=2.0, hosts=("m",))
    write_run_info(config, newer)
    newer_dir = local_run_dir(config, newer.run_id)
    before = _tree(tmp_path / "runs")
    controller = SshRunController(config)
    with stand_in_rank(newer_dir):  # the newer run trains, with no checkpoint yet
        try:
            with pytest.raises(CorralError) as caught:
                await controller.start(resume=True)
        finally:
            await controller.aclose()
    assert caught.value.title == "run still running"
    assert f"run {newer.run_id} is still running" in caught.value.message
    assert f"older run {older.run_id}" in caught.value.message
    assert _tree(tmp_path / "runs") == before


async def test_a_resume_whose_check_fails_leaves_the_earlier_record_byte_identical(
        tmp_path: Path) -> None:
    config = _config(tmp_path, python=str(tmp_path / "no-such-python"))
    earlier = RunInfo(run_id="c-20261122-000000-aaaaaa", cluster="c", state="completed",
                      started=1.0, hosts=("m",), detail="1 rank(s) finished")
    _with_checkpoint(config, earlier)
    before = _tree(tmp_path / "runs")
    controller = SshRunController(config)
    try:
        handle = await controller.start(resume=True)
        events = [e async for e in handle.events()]
    finally:
        await controller.aclose()
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed"
    assert [e.state for e in events if isinstance(e, RunStatus)] == ["checking", "failed"]
    assert _tree(tmp_path / "runs") == before


def test_a_live_leave_is_recorded_with_the_membership_port_the_launch_recorded(
        tmp_path: Path) -> None:
    config = _config(tmp_path)
    two = replace(config, hosts=(*config.hosts, replace(config.hosts[0], name="w")))
    state, record = _recorded_at(two, Phase.LAUNCHING)
    launched = decide(state, PhaseDone(facts={"port": 29500, "membership_port": 31000,
                                              "pgids": {"m": 42, "w": 43}}), 1.0)
    running = decide(launched.state, TailsOpen(), 1.0)
    left = decide(running.state, MembershipSeen(MembershipEvent(
        t=2.0, rank=0, generation=1, step=3, change="left", hosts=("w",), cause="asked",
        world_size=1, members=(0,))), 2.0)
    for action in [*launched.actions, *running.actions, *left.actions]:
        if isinstance(action, RecordChange):
            record.apply(action)
    recorded = read_run_info(two, "c-1")
    assert (recorded.state, recorded.membership_port) == ("running", 31000)
    assert (recorded.hosts, recorded.left_hosts) == (("m",), ("w",))


def _applied(monkeypatch: pytest.MonkeyPatch) -> list[RecordChange]:
    """Every change made through ``RunRecord.apply`` from now on (and still made)."""
    made: list[RecordChange] = []
    apply = RunRecord.apply

    def recorded(self: RunRecord, change: RecordChange) -> None:
        made.append(change)
        apply(self, change)

    monkeypatch.setattr(RunRecord, "apply", recorded)
    return made


async def test_attach_adopts_a_lost_run_through_a_record_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path)
    lost = RunInfo(run_id="c-1", cluster="c", started=1.0, hosts=("m",), state="running",
                   owner="elsewhere", detail=f"{FOLLOWING_LOST}: the corral following it ended")
    write_run_info(config, lost)
    made = _applied(monkeypatch)
    controller = SshRunController(config)
    try:
        await controller.attach("c-1")
    finally:
        await controller.aclose()
    assert made == [RecordAdopted()]
    adopted = read_run_info(config, "c-1")
    assert (adopted.owner, adopted.detail) == (this_owner(), "")


async def test_a_resume_clears_the_earlier_stop_mark_through_a_record_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path, python=str(tmp_path / "no-such-python"))  # its check fails
    stopped = RunInfo(run_id="c-20261122-000000-aaaaaa", cluster="c", state="stopped",
                      started=1.0, hosts=("m",))
    _with_checkpoint(config, stopped)
    mark = local_run_dir(config, stopped.run_id) / STOP_ASKED
    mark.write_text("")
    made = _applied(monkeypatch)
    controller = SshRunController(config)
    try:
        handle = await controller.start(resume=stopped.run_id)
        _ = [e async for e in handle.events()]
    finally:
        await controller.aclose()
    assert made[0] == ClearStopMark() and not mark.exists()


def test_a_change_a_full_disk_kept_out_of_the_record_is_in_its_next_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine's disk full as h2 left: the record must not keep h2 in once it is written.
    from remote.records.disk_full import LOCAL, disk_full
    from remote.run import record as record_module
    from remote.run.record_changes import RecordMembers

    config = _config(tmp_path)
    info = RunInfo(run_id="c-20261129-170000-abcdef", cluster="c", state="running",
                   started=1.0, hosts=("h0", "h1", "h2"))
    record = RunRecord.new(config, info)
    record.launched(master_addr="127.0.0.1")
    writes = record_module.write_run_info

    def full(*_: object) -> None:
        raise disk_full(LOCAL, str(local_run_dir(config, info.run_id)))

    monkeypatch.setattr(record_module, "write_run_info", full)
    record.apply(RecordMembers(hosts=("h0", "h1"), left=("h2",)))
    assert read_run_info(config, info.run_id).hosts == ("h0", "h1", "h2")
    assert record.write_error is not None and "disk full on this machine" in record.write_error
    monkeypatch.setattr(record_module, "write_run_info", writes)  # room again
    record.apply(RecordState("failed", "this machine could not write the run's records"))
    written = read_run_info(config, info.run_id)
    assert (written.state, written.hosts, written.left_hosts) == ("failed", ("h0", "h1"),
                                                                  ("h2",))
