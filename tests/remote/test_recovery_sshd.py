"""Recovery: a rank killed mid-run with ``[run] max_restarts = 1`` ends ``completed`` with the
parameters of an uninterrupted run."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from remote.api import LogLine, RankEvent, RunEvent, RunStatus
from remote.controller import SshRunController
from trainer.events import CheckpointEvent, StartEvent, StepEvent

try:
    from runkit import bounded, run_processes, tiny_run
except ImportError:  # collected as a package
    from tests.remote.runkit import bounded, run_processes, tiny_run  # type: ignore[no-redef]

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

STEPS = 400


def newest_params(run_dir: Path) -> dict[str, torch.Tensor]:
    newest = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    assert newest.name == f"step-{STEPS:08d}.pt"
    return dict(torch.load(newest, map_location="cpu", weights_only=False)["model"])


async def run_to_end(controller: SshRunController, kill_rank: int | None = None
                     ) -> tuple[str, list[RunEvent], int | None]:
    """Start a run and follow it; with ``kill_rank``, SIGKILL that rank once a checkpoint
    exists and the run has gone on past it. Returns the run id, events, killed step."""
    handle = await controller.start()
    events: list[RunEvent] = []
    pids: dict[int, int] = {}
    checkpointed = False
    killed_at: int | None = None
    async for event in bounded(handle.events()):
        events.append(event)
        if not isinstance(event, RankEvent):
            continue
        inner = event.event
        if isinstance(inner, StartEvent):
            pids[inner.rank] = inner.pid
        checkpointed |= isinstance(inner, CheckpointEvent)
        if (kill_rank is not None and killed_at is None and checkpointed
                and isinstance(inner, StepEvent) and kill_rank in pids):
            killed_at = inner.step
            os.kill(pids[kill_rank], signal.SIGKILL)
    return handle.run_id, events, killed_at


async def test_a_killed_rank_with_max_restarts_ends_completed_with_the_same_parameters(
    sshd_cluster
) -> None:
    cluster = sshd_cluster(2)
    run = replace(tiny_run(steps=STEPS), checkpoint_every=40, policy="static", split=(4, 4))
    controller = SshRunController(cluster.config(run=replace(run, max_restarts=1)),
                                  preflight=False)
    try:
        straight_id, straight, _ = await run_to_end(controller)
        restarted_id, events, killed_at = await run_to_end(controller, kill_rank=1)
    finally:
        await controller.aclose()
    assert isinstance(straight[-1], RunStatus) and straight[-1].state == "completed"
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    assert killed_at is not None and killed_at < STEPS
    said = [e.text for e in events if isinstance(e, LogLine) and e.host == "*"]
    assert any(t.startswith("restart 1 of 1 after: h1 rank 1") for t in said), said
    assert any(isinstance(e, RunStatus) and e.state == "launching" and "restart 1" in e.detail
               for e in events)
    resumed = [e.event for e in events if isinstance(e, RankEvent)
               and isinstance(e.event, StartEvent) and e.event.resumed_from]
    assert {s.rank for s in resumed} == {0, 1} and 0 < resumed[0].step <= killed_at
    root = Path(cluster.config().cluster.run_root)
    a, b = newest_params(root / straight_id), newest_params(root / restarted_id)
    worst = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)).item()
                for k in a)
    assert worst <= 1e-6, worst
    assert run_processes(restarted_id) == []


async def test_without_restarts_the_same_kill_fails_the_run(sshd_cluster) -> None:
    cluster = sshd_cluster(2)
    run = replace(tiny_run(steps=STEPS), checkpoint_every=40, policy="static", split=(4, 4))
    controller = SshRunController(cluster.config(run=run), preflight=False)
    try:
        _, events, _ = await run_to_end(controller, kill_rank=1)
    finally:
        await controller.aclose()
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed", final
    assert (final.failed_host, final.failed_rank) == ("h1", 1)
