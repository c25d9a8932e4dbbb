"""Mixed-cluster GPU benchmark: a GPU host + a CPU host against the GPU host alone.

Two ``local`` hosts on one CUDA machine, launched through the run API as ``corral run`` does:
``gpu`` (one rank on its GPU) and ``cpu`` (``--cpu-ranks`` ranks of ``--cpu-threads`` threads,
no GPU). resnet18 on synthetic CIFAR-shaped images, global batch ``--global-batch`` (512),
the dynamic policy from an equal split. The CPU host computes little and would add its whole
gradient exchange to every step: corral should bench its ranks (share 0, out of the exchange),
so the pair runs as fast as the GPU alone (goal >= 0.97; measured 0.48 before the active set).
Each round runs both clusters, the order alternating; throughput is the global batch over the
median of rank 0's ``step_s`` after ``--skip`` steps (the balancer settles in them); medians over
rounds and their ratio are printed, with the CPU ranks' shares at the end of each run.

    python bench/gpu_mixed.py --rounds 3

Without CUDA it says so and exits with code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from remote.api import RankEvent, RunStatus  # noqa: E402
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection  # noqa: E402
from remote.run.controller import SshRunController  # noqa: E402
from trainer.events import RebalanceEvent, StepEvent  # noqa: E402

GOAL = 0.97
SIDES = ("gpu alone", "gpu + cpu")


def cluster(root: Path, args: argparse.Namespace, *, with_cpu: bool) -> ClusterConfig:
    """The GPU host, and with ``with_cpu`` the CPU host beside it."""
    gpu = HostSection(name="gpu", address="local", python=sys.executable,
                      workdir=str(root / "work"), gpus=1, nproc=1)
    cpu = HostSection(name="cpu", address="local", python=sys.executable,
                      workdir=str(root / "work"), gpus=0, nproc=args.cpu_ranks,
                      threads=args.cpu_threads)
    run = RunSection(model="resnet18", dataset="synthetic_image", samples=args.global_batch * 8,
                      global_batch=args.global_batch, policy="dynamic",
                      rebalance_every=args.rebalance_every, steps=args.steps,
                      checkpoint_every=0)
    return ClusterConfig(path=root / "cluster.toml",
                         cluster=ClusterSection(name="gpu-mixed", run_root=str(root / "runs")),
                         hosts=(gpu, cpu) if with_cpu else (gpu,), run=run)


async def measure(config: ClusterConfig, skip: int, global_batch: int
                  ) -> tuple[float, tuple[int, ...]]:
    """(samples/s after ``skip`` steps, the last split the balancer chose: empty when it kept
    the first) of one run to its end."""
    controller = SshRunController(config)
    step_s: list[float] = []
    split: tuple[int, ...] = ()
    final: RunStatus | None = None
    try:
        handle = await controller.start()
        async for event in handle.events():
            if isinstance(event, RunStatus):
                final = event
            inner = event.event if isinstance(event, RankEvent) else None
            if isinstance(inner, StepEvent) and inner.rank == 0 and inner.step > skip:
                step_s.append(inner.step_s)
            if isinstance(inner, RebalanceEvent):
                split = tuple(inner.split)
    finally:
        await controller.aclose()
    if final is None or final.state != "completed" or not step_s:
        raise RuntimeError(f"the run did not complete: {final}")
    return global_batch / statistics.median(step_s), split


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--skip", type=int, default=50, help="steps not measured")
    parser.add_argument("--global-batch", type=int, default=512)
    parser.add_argument("--rebalance-every", type=int, default=10)
    parser.add_argument("--cpu-ranks", type=int, default=2)
    parser.add_argument("--cpu-threads", type=int, default=4)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"bench/gpu_mixed.py needs a CUDA GPU: torch sees none on this machine "
              f"(torch {torch.__version__})", file=sys.stderr)
        return 2
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="corral-gpu-mixed-") as tmp:
        root = Path(tmp)
        configs = {side: cluster(root / str(i), args, with_cpu=side == "gpu + cpu")
                   for i, side in enumerate(SIDES)}
        for index in range(args.rounds):
            for side in SIDES if index % 2 == 0 else SIDES[::-1]:
                rate, split = asyncio.run(measure(configs[side], args.skip, args.global_batch))
                rates[side].append(rate)
                print(f"round {index + 1} {side}: {rate:.1f} samples/s, split "
                      f"{','.join(map(str, split)) or 'unchanged'}", flush=True)
    alone, mixed = (statistics.median(rates[side]) for side in SIDES)
    print(f"\nmedian of {args.rounds}: gpu alone {alone:.1f}, gpu + cpu {mixed:.1f} samples/s; "
          f"ratio {mixed / alone:.3f} (goal >= {GOAL})")
    for side in SIDES:
        print(f"spread {side}: {min(rates[side]):.1f}-{max(rates[side]):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
