"""Live membership on CUDA ranks: a planned leave and a killed rank, each ending with the
parameters of one uninterrupted process (fp32 within the GPU exactness tests' 1e-5).

Several ranks on one GPU need gloo (NCCL refuses two ranks on one device), so the gloo case runs
on any CUDA machine, CUDA tensors throughout; the NCCL case gives every rank a GPU of its own
(``CUDA_VISIBLE_DEVICES``) and needs as many GPUs as ranks. A killed rank under NCCL is not
recovered live yet (docs/reliability.md "Live membership"): a survivor's collective with the dead
peer waits on the GPU until NCCL's watchdog tears the survivor down, and corral restarts the run;
so the NCCL case covers the planned leave, where no collective is left hanging.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from membership_runs import LiveRun, pid_of
from trainer_runs import check, final_params, launch, max_rel_diff

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

FLAGS = ("--model", "simple_cnn", "--dataset", "synthetic_image", "--samples", "256",
         "--global-batch", "32", "--steps", "40", "--seed", "7", "--lr", "0.02",
         "--momentum", "0.9", "--checkpoint-every", "0", "--device", "cuda")
SLOW = ("--slowdown", "3")
"""Steps long enough (an emulated slowdown, which changes no number) for changes mid-run."""
TOLERANCE = 1e-5
"""fp32 on CUDA against one process (tests/trainer/test_trainer_devices.py's bound)."""


class GpuEach(LiveRun):
    """Ranks that each see one GPU of their own (NCCL: one device per rank)."""

    def _env(self, host: str, rank: int, world: int) -> dict[str, str]:
        env = super()._env(host, rank, world)
        env["CUDA_VISIBLE_DEVICES"] = str(rank)
        return env


def left(run: LiveRun, cause: str) -> bool:
    return any(e["change"] == "left" and e.get("cause") == cause
               and e.get("seconds_to_step") is not None for e in run.membership())


@pytest.mark.parametrize("backend", ["gloo", "nccl"])
def test_a_planned_leave_and_a_killed_rank_on_cuda_end_with_one_process_parameters(
        tmp_path: Path, backend: str) -> None:
    hosts = ("h0", "h1", "h2")
    if backend == "nccl" and torch.cuda.device_count() < len(hosts):
        pytest.skip(f"NCCL needs a GPU per rank: {len(hosts)} ranks, "
                    f"{torch.cuda.device_count()} GPU(s)")
    alone = tmp_path / "alone"
    check(launch(1, *FLAGS, "--run-dir", str(alone)))
    kind = GpuEach if backend == "nccl" else LiveRun
    run = kind(tmp_path / "live", (*FLAGS, *SLOW, "--backend", backend), hosts)
    try:
        run.start()
        run.wait_for("step 5", lambda: run.steps_done() >= 5)
        run.ask_leave("h2")
        run.wait_for("h2 left", lambda: left(run, "asked"))
        if backend == "gloo":
            run.kill(1)  # h1's rank, mid-step
            run.wait_for("h1 lost", lambda: left(run, "ranks_died"))
        run.finish()
    finally:
        run.stop_all()
    start = next(e for e in run.events(0) if e["event"] == "start")
    assert start["device"].startswith("cuda") and start["backend"] == backend
    assert run.events(2)[-1]["status"] == "left"
    assert pid_of(run.events(0)) == [run.ranks[0].pid]
    steps = [e["step"] for e in run.events(0) if e["event"] == "step"]
    assert steps == list(range(1, 41))  # each step once: a lost one redone
    diff = max_rel_diff(final_params(alone), final_params(run.run_dir))
    print(f"{backend} on CUDA, a leave{' and a kill' if backend == 'gloo' else ''}: {diff:.2e}")
    assert diff <= TOLERANCE
