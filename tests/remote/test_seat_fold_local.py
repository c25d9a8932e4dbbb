"""Every seat folds the run's whole record, then the live tail (real torchrun ranks on two
``local`` hosts): a second seat attached mid-run (what ``corral attach`` and a ``--serve`` tab
open), the console's seat after ``r`` (a resumed launch of the same run) and the launching
seat after a ``max_restarts`` relaunch (the lines the ranks wrote as they were stopped,
copied before the relaunch, replayed then) end on the figures
``corral report`` reads from the record — the balancer's moves, the restarts and time lost,
the mean, ideal and efficiency, the steps and the wall time."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace
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


async def test_a_seat_attached_mid_run_ends_on_the_reports_figures(tmp_path: Path) -> None:
    config = _config(tmp_path, steps=40)
    launcher, watcher = SshRunController(config), SshRunController(config)
    try:
        handle = await launcher.start()
        launching = RunModel.of_run(handle.run_id)
        stream = handle.events()
        async for event in bounded(stream):
            launching.apply(event)
            if _step_of(event) >= 12:
                break
        attached = await watcher.attach(handle.run_id)
        seat = RunModel.of_run(handle.run_id)
        seen: list[RunEvent] = []
        await asyncio.gather(_fold([], launching, stream),
                             _fold(seen, seat, attached.events()))
    finally:
        await launcher.aclose()
        await watcher.aclose()
    # The seat's first events are the record's: from the run's first step, not the attach's.
    first_step = next(_step_of(e) for e in seen if _step_of(e))
    assert first_step == 1
    summary = _report(config, handle.run_id)
    assert summary.outcome.state == "completed" and summary.moves
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


async def test_the_launching_seat_after_a_max_restarts_relaunch_shows_the_whole_run(
        tmp_path: Path) -> None:
    config = _config(tmp_path, steps=30)
    config = replace(config, run=replace(config.run, max_restarts=1))
    controller = SshRunController(config)
    model, pids, killed = RunModel.of_run(""), {}, False
    try:
        handle = await controller.start()
        model.reset_run(handle.run_id)
        async for event in bounded(handle.events()):
            model.apply(event)
            inner = event.event if isinstance(event, RankEvent) else None
            if isinstance(inner, StartEvent):
                pids[inner.rank] = inner.pid
            if not killed and _step_of(event) >= 12:  # beta's rank dies: a relaunch
                os.kill(pids[1], signal.SIGKILL)
                killed = True
    finally:
        await controller.aclose()
    summary = _report(config, handle.run_id)
    assert killed and summary.outcome.state == "completed" and summary.restarts == 1
    _assert_same(model, summary)
