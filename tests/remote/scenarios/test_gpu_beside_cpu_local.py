"""A GPU host beside a CPU host (two ``local`` hosts, one gloo world): with the CPU rank benched
the GPU rank trains alone and exchanges nothing, and the run ends as it should. Needs CUDA:
skipped elsewhere (marked gpu, so slow: tests/tiers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from remote.api import RankEvent, RunEvent
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.events import RunStatus
from remote.run.controller import SshRunController
from tests.remote.runkit import bounded
from trainer.events import EndEvent, RebalanceEvent, StartEvent, StepEvent

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

STEPS = 30


def _config(tmp_path: Path, *, split: tuple[int, int] | None, policy: str,
            cpu_slowdown: float = 1.0) -> ClusterConfig:
    """Host ``gpu`` (one CUDA rank) and host ``cpu`` (one CPU rank) on this machine."""
    common = {"address": "local", "python": sys.executable, "workdir": str(tmp_path / "work")}
    hosts = (HostSection(name="gpu", gpus=1, nproc=1, **common),  # type: ignore[arg-type]
             HostSection(name="cpu", gpus=0, nproc=1, threads=1, slowdown=cpu_slowdown,
                         **common))  # type: ignore[arg-type]
    run = RunSection(model="simple_cnn", dataset="synthetic_image", samples=64 * 8,
                     global_batch=64, split=split, policy=policy, rebalance_every=5,
                     steps=STEPS, lr=0.05, seed=3, checkpoint_every=0)
    return ClusterConfig(path=tmp_path / "cluster.toml",
                         cluster=ClusterSection(name="gpu-cpu", run_root=str(tmp_path / "runs")),
                         hosts=hosts, run=run)


async def _events(config: ClusterConfig) -> list[RunEvent]:
    controller = SshRunController(config)
    try:
        handle = await controller.start()
        return [event async for event in bounded(handle.events())]
    finally:
        await controller.aclose()


def _inner(events: list[RunEvent], host: str, kind: type) -> list:  # type: ignore[type-arg]
    return [e.event for e in events if isinstance(e, RankEvent) and e.host == host
            and isinstance(e.event, kind)]


async def test_a_gloo_run_with_the_cpu_rank_benched_trains_on_the_gpu_alone(
        tmp_path: Path) -> None:
    events = await _events(_config(tmp_path, split=(64, 0), policy="static"))
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    [gpu_start] = _inner(events, "gpu", StartEvent)
    [cpu_start] = _inner(events, "cpu", StartEvent)
    assert gpu_start.device.startswith("cuda") and gpu_start.backend == "gloo"
    assert cpu_start.device == "cpu"
    assert (gpu_start.precision, gpu_start.tf32) == ("fp32", False)
    gpu_steps, cpu_steps = _inner(events, "gpu", StepEvent), _inner(events, "cpu", StepEvent)
    assert [s.local_batch for s in gpu_steps] == [64] * STEPS
    assert [s.local_batch for s in cpu_steps] == [0] * STEPS  # benched, yet every step taken
    assert all(e.status == "completed" for host in ("gpu", "cpu")
               for e in _inner(events, host, EndEvent))


async def test_a_slow_cpu_rank_is_benched_and_the_gpu_rank_goes_on_alone(
        tmp_path: Path) -> None:
    # The dynamic policy benches the CPU rank (20x slower than it is); from then on the
    # active set is the GPU rank alone: no gradient collective, no buffer broadcast.
    events = await _events(_config(tmp_path, split=None, policy="dynamic", cpu_slowdown=20.0))
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    moves = _inner(events, "gpu", RebalanceEvent)
    benched = next((m for m in moves if tuple(m.split) == (64, 0)), None)
    assert benched is not None, moves
    cpu_steps = _inner(events, "cpu", StepEvent)
    assert all(s.local_batch == 0 for s in cpu_steps if s.step >= benched.step)
    assert all(e.status == "completed" for host in ("gpu", "cpu")
               for e in _inner(events, host, EndEvent))
