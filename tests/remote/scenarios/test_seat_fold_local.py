"""Every seat folds the run's whole record, then the live tail (real torchrun ranks on two
``local`` hosts): a second seat attached mid-run (what ``corral attach`` and a ``--serve`` tab
open), the console's seat after ``r`` (a resumed launch of the same run) and the launching
seat after a ``max_restarts`` relaunch (the lines the ranks wrote as they were stopped,
copied before the relaunch, replayed then) end on the figures
``corral report`` reads from the record — the balancer's moves, the restarts and time lost,
the mean, ideal and efficiency, the steps and the wall time. The attached seats and the relaunch
are one run (``relaunched``: a seat attached at step 6, a rank killed at step 12, a seat
attached once the relaunch reached step 16), launched once for the three tests; the seat
attached before the kill follows the relaunch live to the run's end. The seat after ``r`` is
the run of ``resumed`` (stopped at step 12, resumed from its newest checkpoint), which also
proves the resume itself: the same run id and directory, every rank from the checkpoint, the
stream replaying the record then the new launch, and a stale state refreshed from the hosts."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from console.model.run import RunModel
from remote.api import RankEvent, RunEvent
from remote.config.cluster import ClusterConfig
from remote.events import RunStatus
from remote.hosts.pool import HostPool
from remote.records.history import load_history
from remote.records.runs import RunInfo, list_runs, local_run_dir, read_run_info, write_run_info
from remote.records.summary import RunSummary, summarize
from remote.run.controller import SshRunController
from remote.run.refresh import refresh_runs
from tests.remote.runkit import bounded, local_cluster, run_processes, tiny_run
from trainer.events import CheckpointEvent, StartEvent, StepEvent

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, steps: int) -> ClusterConfig:
    run = replace(tiny_run(steps), checkpoint_every=5, policy="dynamic")
    config = local_cluster(tmp_path, ("alpha", "beta"), run)
    slow = replace(config.hosts[1], slowdown=20.0)  # steps long enough to open a seat mid-run
    return replace(config, hosts=(config.hosts[0], slow))


def _report(config: ClusterConfig, run_id: str) -> RunSummary:
    return summarize(load_history(local_run_dir(config, run_id)))[0]


def _assert_same(model: RunModel, summary: RunSummary) -> None:
    figures = model.figures
    assert model.finished
    assert figures.steps_done == summary.steps_done
    assert figures.mean_samples_per_s == summary.mean_samples_per_s
    assert figures.ideal_samples_per_s == summary.ideal_samples_per_s
    assert model.efficiency == summary.efficiency
    assert (figures.restarts, figures.lost_s) == (summary.restarts, summary.lost_s)
    assert model.decisions == summary.moves
    assert model.elapsed_s(0.0) == summary.wall_s


async def _fold(events: list[RunEvent], model: RunModel, stream: object) -> None:
    async for event in bounded(stream):  # type: ignore[arg-type]
        events.append(event)
        model.apply(event)


def _step_of(event: RunEvent) -> int:
    return event.event.step if isinstance(event, RankEvent) and isinstance(
        event.event, StepEvent) else 0


@dataclass
class Relaunched:
    """One run with ``max_restarts = 1``: beta's rank killed at step 12 (a relaunch), then a
    second seat attached mid-run; what both seats folded."""
    config: ClusterConfig
    run_id: str
    launching: RunModel
    seat: RunModel
    seen: list[RunEvent]
    """The attached seat's events."""
    killed: bool
    early: RunModel
    """A seat attached before the kill (at step 6): it must follow the relaunch too."""
    early_seen: list[RunEvent]


async def _kill_then_attach(config: ClusterConfig) -> Relaunched:
    launcher, watcher = SshRunController(config), SshRunController(config)
    before = SshRunController(config)  # another process's seat, attached before the kill
    pids: dict[int, int] = {}
    killed: list[int] = []
    early = RunModel.of_run("")
    early_seen: list[RunEvent] = []
    early_fold: asyncio.Task[None] | None = None

    def applied(model: RunModel, event: RunEvent) -> None:
        model.apply(event)
        inner = event.event if isinstance(event, RankEvent) else None
        if isinstance(inner, StartEvent):
            pids[inner.rank] = inner.pid

    try:
        handle = await launcher.start()
        launching = RunModel.of_run(handle.run_id)
        stream = handle.events()
        async for event in bounded(stream):
            applied(launching, event)
            if early_fold is None and _step_of(event) >= 6:  # a seat attaches, then the kill
                early = RunModel.of_run(handle.run_id)
                early_fold = asyncio.create_task(_fold(
                    early_seen, early, (await before.attach(handle.run_id)).events()))
            elif not killed and _step_of(event) >= 12:  # beta's rank dies: a relaunch
                os.kill(pids[1], signal.SIGKILL)
                killed.append(pids[1])
            elif killed and _step_of(event) >= 16:  # the relaunch trains: a seat attaches
                break
        attached = await watcher.attach(handle.run_id)
        seat = RunModel.of_run(handle.run_id)
        seen: list[RunEvent] = []
        assert early_fold is not None
        await asyncio.gather(_fold([], launching, stream), _fold(seen, seat, attached.events()),
                             early_fold)
    finally:
        if early_fold is not None:
            early_fold.cancel()
        await launcher.aclose()
        await watcher.aclose()
        await before.aclose()
    return Relaunched(config, handle.run_id, launching, seat, seen, bool(killed), early,
                      early_seen)


@pytest.fixture(scope="module")
def relaunched(tmp_path_factory: pytest.TempPathFactory) -> Relaunched:
    """The attached seat's and the relaunch's run, launched once for both their tests."""
    config = _config(tmp_path_factory.mktemp("relaunched"), steps=40)
    return asyncio.run(_kill_then_attach(
        replace(config, run=replace(config.run, max_restarts=1))))


def test_a_seat_attached_mid_run_ends_on_the_reports_figures(relaunched: Relaunched) -> None:
    # The seat's first events are the record's: from the run's first step, not the attach's.
    first_step = next(_step_of(e) for e in relaunched.seen if _step_of(e))
    assert first_step == 1
    summary = _report(relaunched.config, relaunched.run_id)
    assert summary.outcome.state == "completed" and summary.moves
    seat, launching = relaunched.seat, relaunched.launching
    _assert_same(seat, summary)
    _assert_same(launching, summary)
    assert launching.links and (seat.links, seat.estimate) == (launching.links,
                                                                 launching.estimate)


@dataclass
class Resumed:
    """One run stopped at step 12 and resumed (``start(resume=True)``, as the console's ``r``)
    to its end: the first launch's events, the resumed handle's and what its seat folded."""
    config: ClusterConfig
    first_id: str
    second_id: str
    before: list[RunEvent]
    after: list[RunEvent]
    seat: RunModel
    stale_refreshed: list[str]
    """The states ``refresh_runs`` gave once the stopped run's record said "running" (a
    follower that died leaves such a stale state), before the resume."""


async def _stop_then_resume(config: ClusterConfig) -> Resumed:
    controller = SshRunController(config)
    before: list[RunEvent] = []
    after: list[RunEvent] = []
    try:
        first = await controller.start()
        async for event in bounded(first.events()):
            before.append(event)
            if _step_of(event) >= 12 and not any(_step_of(e) >= 12 for e in before[:-1]):
                assert (await first.stop(grace_s=20.0)).clean
        write_run_info(config, replace(read_run_info(config, first.run_id), state="running"))
        stale_refreshed = [r.state for r in await _refreshed(config)]
        second = await controller.start(resume=True)
        seat = RunModel.of_run(second.run_id)  # the seat forgets, then replays the record
        await _fold(after, seat, second.events())
    finally:
        await controller.aclose()
    return Resumed(config, first.run_id, second.run_id, before, after, seat, stale_refreshed)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> Resumed:
    """The resumed run, launched (twice: a start and its resume) once for its tests."""
    return asyncio.run(_stop_then_resume(_config(tmp_path_factory.mktemp("resumed"), steps=30)))


def test_the_console_after_r_shows_the_whole_run_not_the_new_attempt(resumed: Resumed) -> None:
    summary = _report(resumed.config, resumed.first_id)
    assert summary.outcome.state == "completed" and summary.restarts == 1
    _assert_same(resumed.seat, summary)


def test_resume_relaunches_the_newest_run_from_its_checkpoint(resumed: Resumed) -> None:
    """Restart = stop + start(resume=True): the same run id and directory, every rank from the
    newest checkpoint, the stream replaying the record then showing the new launch; a stale
    state left by a follower that died is refreshed from the hosts."""
    config, run_id = resumed.config, resumed.first_id
    stopped = resumed.before[-1]
    assert isinstance(stopped, RunStatus) and stopped.state == "stopped", stopped
    saved = max(e.event.step for e in resumed.before if isinstance(e, RankEvent)
                and isinstance(e.event, CheckpointEvent))
    assert resumed.second_id == run_id
    live = [e for e in resumed.after if isinstance(e, RankEvent) and not e.replayed]
    starts = [e.event for e in live if isinstance(e.event, StartEvent)]
    assert len(starts) == len(config.hosts)
    assert all(s.step >= saved and s.resumed_from for s in starts)
    # The resumed stream replays the record first (every seat folds the whole run), then shows
    # the new launch from its checkpoint on.
    assert any(isinstance(e, RankEvent) and e.replayed for e in resumed.after)
    steps = [e.event.step for e in live if isinstance(e.event, StepEvent)]
    assert steps and min(steps) > saved
    assert [r.run_id for r in list_runs(config)] == [run_id]
    assert run_processes(run_id) == []
    # A follower that died leaves a stale state; the hosts tell the real one: stopped (the
    # stop's marks) after the first launch, completed (every exit 0) after the resumed one.
    assert resumed.stale_refreshed == ["stopped"]
    write_run_info(config, replace(read_run_info(config, run_id), state="running"))
    assert [r.state for r in asyncio.run(_refreshed(config))] == ["completed"]
    assert [r.state for r in list_runs(config)] == ["completed"]


async def _refreshed(config: ClusterConfig) -> list[RunInfo]:
    pool = HostPool(config)
    try:
        return await refresh_runs(config, pool)
    finally:
        await pool.aclose()


def test_the_launching_seat_after_a_max_restarts_relaunch_shows_the_whole_run(
        relaunched: Relaunched) -> None:
    summary = _report(relaunched.config, relaunched.run_id)
    assert relaunched.killed and summary.outcome.state == "completed" and summary.restarts == 1
    _assert_same(relaunched.launching, summary)


def test_a_seat_attached_before_a_relaunch_follows_the_new_attempt_to_the_end(
        relaunched: Relaunched) -> None:
    """A seat attached before a ``max_restarts`` relaunch (``corral attach``, a ``--serve`` tab,
    the console) shows the new attempt live and the run's end, as the report reads it; it never
    ends on the failed attempt, nor records the run as failed."""
    summary = _report(relaunched.config, relaunched.run_id)
    assert relaunched.killed and summary.outcome.state == "completed" and summary.restarts == 1
    seen = relaunched.early_seen
    states = [e.state for e in seen if isinstance(e, RunStatus)]
    assert states[-1] == "completed" and "failed" not in states, states
    live = [e for e in seen if isinstance(e, RankEvent) and not e.replayed]
    relaunched_starts = [e.event for e in live if isinstance(e.event, StartEvent)
                         and e.event.resumed_from]
    assert len(relaunched_starts) == len(relaunched.config.hosts)
    assert max(_step_of(e) for e in live) == summary.steps_done
    _assert_same(relaunched.early, summary)
    assert read_run_info(relaunched.config, relaunched.run_id).state == "completed"
