"""Every seat shows the run ``corral report`` shows: a seat opened on a running run (``corral
attach``, a ``--serve`` tab, the console after ``r``) folds the run's record first — every
rank's events from the run's first line, every attempt and generation — then the live tail,
through the one reducer. Here the record is written as the run's own follower writes it
(``CollectedCopy``), a second seat opens on it mid-run (``RecordReplay`` up to its copies'
saved offsets, as ``RunFollower`` does) and the rest arrives live; at each moment looked at,
its figures equal the report's of the record as it stands."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from console.model.run import RunModel
from remote.api import RankEvent, RunStatus
from remote.records.collected import CollectedCopy
from remote.records.history import load_history
from remote.records.replay import RecordReplay
from remote.records.summary import RunSummary, summarize
from trainer.events import (
    EndEvent,
    MembershipEvent,
    RebalanceEvent,
    StartEvent,
    StepEvent,
    TrainerEvent,
    event_to_dict,
)

try:
    from tests.remote.recorded import info, restarted_run, synthetic_run, write_recorded
except ImportError:  # run from tests/console
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))
    from recorded import (  # type: ignore[no-redef]
        info,
        restarted_run,
        synthetic_run,
        write_recorded,
    )

Line = tuple[str, TrainerEvent]
T0 = 1_700_000_000.0


class Record:
    """A run's record as its follower writes it: each host's copy, saved after every line."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.copies: dict[str, CollectedCopy] = {}
        self.offsets: dict[tuple[str, str], int] = {}

    def write(self, lines: Sequence[Line]) -> None:
        for host, event in lines:
            copy = self.copies.get(host)
            if copy is None:
                copy = self.copies[host] = CollectedCopy(self.run_dir, host)
            path = f"metrics/rank-{event.rank}.jsonl"
            text = json.dumps(event_to_dict(event))
            end = self.offsets[(host, path)] = self.offsets.get((host, path), 0) + len(text) + 1
            copy.append(path, text, end)
            copy.save()

    def close(self) -> None:
        for copy in self.copies.values():
            copy.close()

    def report(self) -> RunSummary:
        return summarize(load_history(self.run_dir))[0]


def seat_opened(record: Record) -> RunModel:
    """A second seat opening on the run now: the record replayed up to the saved offsets."""
    model = RunModel.of_run(record.run_dir.name)
    hosts = sorted(p.name for p in (record.run_dir / "collected").iterdir())
    seats = {h: CollectedCopy(record.run_dir, h) for h in hosts}
    try:
        for line in RecordReplay(record.run_dir).take({h: c.saved for h, c in seats.items()}):
            model.apply(RankEvent(host=line.host, event=line.event))
    finally:
        for copy in seats.values():
            copy.close()
    model.apply(RunStatus(t=T0 + 500, run_id=model.run_id or "", state="running"))
    return model


def assert_same(model: RunModel, summary: RunSummary) -> None:
    """What a test looks at: the panels' whole-run figures and the report's."""
    figures = model.figures
    assert figures.mean_samples_per_s == summary.mean_samples_per_s
    assert figures.ideal_samples_per_s == summary.ideal_samples_per_s
    assert figures.efficiency == summary.efficiency
    assert figures.steps_done == summary.steps_done
    assert figures.restarts == summary.restarts and figures.lost_s == summary.lost_s
    assert model.decisions == summary.moves
    assert [(g.generation, g.change, g.step) for g in figures.generations] == [
        (g.generation, g.change, g.step) for g in summary.generations]
    assert model.loss == (summary.loss.final if summary.loss else None)
    if model.finished:
        assert model.elapsed_s(T0 + 10_000) == summary.wall_s
    else:  # the header counts from the record's first line, as the report's wall time does
        assert model.elapsed_s(figures.last_t or 0.0) == summary.wall_s


def membership_run() -> list[Line]:
    """Three hosts; ``c`` leaves at step 8 (asked), joins again at step 14 as member 3."""
    lines: list[Line] = []
    hosts = {0: "a", 1: "b", 2: "c"}
    split = {0: 8, 1: 4, 2: 4}
    for rank, host in hosts.items():
        lines.append((host, StartEvent(
            t=T0, rank=rank, world_size=3, local_rank=0, host=host, pid=rank, device="cpu",
            device_name="cpu", backend="gloo", model="m", dataset="d", global_batch=16,
            split=(8, 4, 4), policy="dynamic", step=0, total_steps=20, steps_per_epoch=100,
            threads=1, slowdown=1.0)))
    for step in range(1, 21):
        t = T0 + step
        if step == 4:
            lines.append(("a", RebalanceEvent(t=t, rank=0, step=4, previous=(8, 4, 4),
                                              split=(10, 4, 2), reason="c slowest",
                                              predicted_gain=0.2, times=(0.08, 0.04, 0.08),
                                              policy="dynamic")))
            split = {0: 10, 1: 4, 2: 2}
        if step == 9:
            lines.append(("c", EndEvent(t=t, rank=2, step=8, status="left")))
            lines.append(("a", MembershipEvent(t=t, rank=0, generation=1, step=8, change="left",
                                               hosts=("c",), cause="asked", world_size=2,
                                               members=(0, 1), seconds_to_step=0.5)))
            split = {0: 11, 1: 5}
        if step == 15:
            lines.append(("c", StartEvent(
                t=t, rank=3, world_size=3, local_rank=0, host="c", pid=9, device="cpu",
                device_name="cpu", backend="gloo", model="m", dataset="d", global_batch=16,
                split=(10, 4, 2), policy="dynamic", step=14, total_steps=20,
                steps_per_epoch=100, threads=1, slowdown=1.0)))
            lines.append(("a", MembershipEvent(t=t, rank=0, generation=2, step=14,
                                               change="joined", hosts=("c",), world_size=3,
                                               members=(0, 1, 3), state_bytes=1000,
                                               seconds_to_step=1.5)))
            hosts[3] = "c"
            split = {0: 10, 1: 4, 3: 2}
        step_s = 0.01 * max(split.values())
        for rank, share in split.items():
            lines.append((hosts[rank], StepEvent(
                t=t, rank=rank, step=step, epoch=0, local_batch=share, loss=1.0 / step,
                compute_s=0.005 * share * (2 if rank >= 2 else 1), step_s=step_s,
                global_loss=1.0 / step if rank == 0 else None)))
    return lines


def recorded_lines(lines: Sequence[tuple[str, Any]]) -> list[Line]:
    return [(host, event) for host, event in lines if not isinstance(event, dict)]


RUNS = {
    "attach mid-run": (lambda: recorded_lines(synthetic_run(steps=20)), 0.5),
    "after a restart": (lambda: recorded_lines(restarted_run()), 0.6),
    "after a leave": (membership_run, 0.5),
    "after a join": (membership_run, 0.8),
}


@pytest.mark.parametrize("situation", sorted(RUNS))
def test_a_seat_opened_mid_run_shows_the_reports_figures_then_and_at_the_end(
        tmp_path: Path, situation: str) -> None:
    make, cut = RUNS[situation]
    lines = make()
    lines.sort(key=lambda hl: hl[1].t)
    run_dir = tmp_path / "runs" / "fold-1"
    write_recorded(run_dir, info("fold-1", "running"), [])
    record = Record(run_dir)
    try:
        before, live = lines[:int(len(lines) * cut)], lines[int(len(lines) * cut):]
        record.write(before)
        model = seat_opened(record)
        assert_same(model, record.report())  # at the moment it opens
        record.write(live)  # the rest, as the tail brings it
        for host, event in live:
            model.apply(RankEvent(host=host, event=event))
        assert_same(model, record.report())
        model.apply(RunStatus(t=T0 + 600, run_id="fold-1", state="completed"))
        assert_same(model, record.report())  # at the end
    finally:
        record.close()


def _fed(model: RunModel, lines: Sequence[Line]) -> None:
    for host, event in lines:
        model.apply(RankEvent(host=host, event=event))


def test_a_leave_and_a_join_are_decisions_and_one_row_per_host() -> None:
    lines = sorted(membership_run(), key=lambda hl: hl[1].t)
    model = RunModel(cluster_name="lab", hosts=["a", "b", "c"], policy="dynamic")
    model.reset_run("m-1")
    _fed(model, [hl for hl in lines if hl[1].t <= T0 + 12])  # after the leave
    change = model.changes[-1]
    assert isinstance(change, MembershipEvent) and (change.generation, change.cause) == (
        1, "asked")
    assert model.split == (11, 5)  # the trainer's split without c, not c's share kept
    rows = {view.host: view for view in model.rank_and_host_rows()}
    assert (rows["c"].status, rows["c"].reason) == ("left", "left at step 8 (asked)")
    assert model.efficiency is not None  # a step is complete with the ranks in it
    _fed(model, [hl for hl in lines if hl[1].t > T0 + 12])  # c joins again, as member 3
    views = model.rank_and_host_rows()
    assert [(v.host, v.rank_row.rank if v.rank_row else None) for v in views] == [
        ("a", 0), ("b", 1), ("c", 3)]
    assert views[2].reason == "joined at step 14"
    assert [type(c).__name__ for c in model.changes] == [
        "Move", "MembershipEvent", "MembershipEvent"]
    assert [model.member(i) for i in range(3)] == [0, 1, 3]


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
async def test_the_hosts_panel_never_cuts_the_step_a_host_left_at(size: tuple[int, int]) -> None:
    from console_helpers import make_app, screen_text, settle, wait_for

    from tests.fake_runs import FakeController, FakeHost

    def shows(*rows: str) -> bool:
        text = screen_text(app)
        return any(row in text for row in rows)

    app = make_app(FakeController(hosts=[FakeHost(name=n) for n in "abc"]))
    lines = sorted(membership_run(), key=lambda hl: hl[1].t)
    async with app.run_test(size=size) as pilot:
        model = app.session.model
        model.reset_run("m-1")
        model.apply(RunStatus(t=T0, run_id="m-1", state="running"))
        _fed(model, [hl for hl in lines if hl[1].t <= T0 + 12])
        await settle(pilot)
        # the decisions follow their newest row once the split above them is laid out again
        await wait_for(pilot, lambda: shows("gen 1  c left (asked)", "gen1 −c asked"))
        text = screen_text(app)
        assert "left at step 8 (asked)" in text or "left @8" in text  # never "left at st"
        assert "2 hosts · 2 ranks · 1 left" in text
        _fed(model, [hl for hl in lines if hl[1].t > T0 + 12])
        await settle(pilot)
        await wait_for(pilot, lambda: shows("gen 2  c joined", "gen2 +c"))
        text = screen_text(app)
        assert "3 hosts · 3 ranks" in text
        assert "c:3" in text or size[0] < 120  # the balancer's rows: 80×24 shows two
        assert "joined at step 14" in text or "joined @14" in text
        assert "c:2" not in text  # the rank c had before it left: gone from every panel
