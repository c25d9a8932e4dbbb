"""Every seat folds the run's whole record, then the live tail (real torchrun ranks on two
``local`` hosts): a second seat attached mid-run (what ``corral attach`` and a ``--serve`` tab
open), the console's seat after ``r`` (a resumed launch of the same run) and the launching
seat after a ``max_restarts`` relaunch (the lines the ranks wrote as they were stopped,
copied before the relaunch, replayed then) end on the figures
``corral report`` reads from the record — the balancer's moves, the restarts and time lost,
the mean, ideal and efficiency, the steps and the wall time. The attached seat and the relaunch
are one run (``relaunched``: a rank killed at step 12, the seat attached once the relaunch
reached step 16), launched once for both tests."""

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
from remote.records.history import load_history
from remote.records.runs import local_run_dir
from remote.records.summary import RunSummary, summarize
from remote.run.controller import SshRunController
from tests.remote.runkit import bounded, local_cluster, tiny_run
from trainer.events import StartEvent, StepEvent

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


async def _kill_then_attach(config: ClusterConfig) -> Relaunched:
    launcher, watcher = SshRunController(config), SshRunController(config)
    pids: dict[int, int] = {}
    killed: list[int] = []

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
            if not killed and _step_of(event) >= 12:  # beta's rank dies: a relaunch
                os.kill(pids[1], signal.SIGKILL)
                killed.append(pids[1])
            elif killed and _step_of(event) >= 16:  # the relaunch trains: a seat attaches
                break
        attached = await watcher.attach(handle.run_id)
        seat = RunModel.of_run(handle.run_id)
        seen: list[RunEvent] = []
        await asyncio.gather(_fold([], launching, stream), _fold(seen, seat, attached.events()))
    finally:
        await launcher.aclose()
        await watcher.aclose()
    return Relaunched(config, handle.run_id, launching, seat, seen, bool(killed))


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


async def test_the_console_after_r_shows_the_whole_run_not_the_new_attempt(
        tmp_path: Path) -> None:
    config = _config(tmp_path, steps=30)
    controller = SshRunController(config)
    try:
        handle = await controller.start()
        async for event in bounded(handle.events()):
            if _step_of(event) >= 12:
                await handle.stop(grace_s=20.0)
        resumed = await controller.start(resume=handle.run_id)
        model = RunModel.of_run(resumed.run_id)  # the seat forgets, then replays the record
        await _fold([], model, resumed.events())
    finally:
        await controller.aclose()
    summary = _report(config, handle.run_id)
    assert summary.outcome.state == "completed" and summary.restarts == 1
    _assert_same(model, summary)


def test_the_launching_seat_after_a_max_restarts_relaunch_shows_the_whole_run(
        relaunched: Relaunched) -> None:
    summary = _report(relaunched.config, relaunched.run_id)
    assert relaunched.killed and summary.outcome.state == "completed" and summary.restarts == 1
    _assert_same(relaunched.launching, summary)
