"""CPU rank benchmark: corral's trainer on one CPU rank against torch's own CPU launcher.

One rank of simple_cnn on synthetic data, on the first ``--cores`` cores of this machine, three
ways, interleaved round after round (the order rotates, so a drifting machine favours none):

- ``corral``: torchrun and the trainer as ``corral run`` starts them: the allocator
  environment of this host (tcmalloc or jemalloc preloaded when present, else tuned glibc), the
  rank pinned to its cores with one thread per core (``--cores``).
- ``run_cpu``: the same trainer, model and loop under ``python -m torch.backends.xeon.run_cpu``
  (its core binding and OpenMP settings), with the same allocator preloaded; corral's own
  pinning is off (``--no-pin-cores``), so placement is run_cpu's.
- ``before``: today's defaults before this change: glibc's allocator untouched
  (``CORRAL_ALLOCATOR=off``), no pinning, the same thread count.
- ``prefetch``: ``corral`` with ``--prefetch on`` (the next batch prepared by a worker thread
  while the step computes), to decide whether CPU ranks should prefetch.

``--data-only`` measures instead, in this process on one thread, how much of a step preparing
the batch takes (``trainer.step.batches.local_batch`` against forward + backward + optimizer step,
interleaved step by step): the most a CPU rank could win by prefetching.

Throughput is the median of rank 0's per-step samples/s after ``--skip`` steps. Targets:
corral / run_cpu >= 0.97; corral / before is the speed-up (reported); prefetch / corral
says whether prefetching helps a CPU rank.

    python bench/cpu_rank.py [--rounds N] [--batches 64,256] [--cores 1] [--steps 60]
                             [--data-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    RunResult,
    corral_env,
    csv,
    markdown_table,
    run_command,
    run_main,
    trainer_flags,
)
from trainer.launch_contract import ALLOCATOR_ENV
from trainer.placement import format_cpulist

TARGET_RUN_CPU = 0.97
VARIANTS = ("corral", "run_cpu", "before", "prefetch")
Runner = Callable[[str, Path, int], RunResult]


def _runners(args: argparse.Namespace) -> dict[str, Runner]:
    cores = format_cpulist(range(args.cores))
    env = corral_env()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node=1"]

    def flags(b: int, run_dir: Path) -> list[str]:
        return trainer_flags(global_batch=b, steps=args.steps, run_dir=run_dir,
                             threads=args.cores)

    def corral(label: str, run_dir: Path, b: int) -> RunResult:
        cmd = [*torchrun, *flags(b, run_dir), "--cores", cores]
        return run_command(label, cmd, run_dir, env=env, threads=args.cores)

    def run_cpu(label: str, run_dir: Path, b: int) -> RunResult:
        # run_cpu runs only .py files: the trainer's entry point as a script.
        script = str(Path(__file__).resolve().parent / "trainer_script.py")
        cmd = [sys.executable, "-m", "torch.backends.xeon.run_cpu", "--ninstances", "1",
               "--ncores-per-instance", str(args.cores), "--disable-numactl", script,
               *flags(b, run_dir)[2:], "--no-pin-cores"]
        return run_command(label, cmd, run_dir, env=env, threads=args.cores)

    def before(label: str, run_dir: Path, b: int) -> RunResult:
        cmd = [*torchrun, *flags(b, run_dir), "--no-pin-cores"]
        return run_command(label, cmd, run_dir, env={ALLOCATOR_ENV: "off"},
                           threads=args.cores)

    def prefetch(label: str, run_dir: Path, b: int) -> RunResult:
        cmd = [*torchrun, *flags(b, run_dir), "--cores", cores, "--prefetch", "on"]
        return run_command(label, cmd, run_dir, env=env, threads=args.cores)

    return {"corral": corral, "run_cpu": run_cpu, "before": before, "prefetch": prefetch}


def data_share(batches: list[int], steps: int, skip: int) -> None:
    """Print, per batch size, the median time to build a batch and to train on it."""
    import time

    import torch

    from trainer.step.batch_order import GlobalBatchOrder
    from trainer.step.batches import local_batch
    from trainer.tasks.image import build

    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    for b in batches:
        task = build({"model": "simple_cnn", "dataset": "synthetic_image",
                      "samples": max(4096, 4 * b), "norm": "group", "seed": 0})
        order = GlobalBatchOrder(len(task.train_data), b, 0)
        optimizer = torch.optim.SGD(task.model.parameters(), lr=0.01)
        prep, train = [], []
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            batch = local_batch(task, order, step, (b,), 0, cpu)
            t1 = time.perf_counter()
            loss, _ = task.loss(task.model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step > skip:
                prep.append(t1 - t0)
                train.append(time.perf_counter() - t1)
        p, t = statistics.median(prep), statistics.median(train)
        print(f"B={b}: batch {1000 * p:.2f} ms, train {1000 * t:.1f} ms per step: the batch is "
              f"{p / (p + t):.1%} of a step")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--batches", default="64,256", help="batch sizes, comma-separated")
    parser.add_argument("--cores", type=int, default=1, help="cores (and threads) of the rank")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip", type=int, default=15, help="warm-up steps not measured")
    parser.add_argument("--data-only", action="store_true",
                        help="only measure the batch's share of a step, in this process")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.data_only:
        data_share(batches, args.steps, args.skip)
        return 0
    runners = _runners(args)
    got: dict[tuple[str, int], list[RunResult]] = {}
    with tempfile.TemporaryDirectory(prefix="corral-cpu-rank-") as tmp:
        print(f"cpu_rank: {args.rounds} rounds, B={csv(batches)}, {args.cores} core(s), "
              f"allocator env {corral_env()}")
        for n in range(args.rounds):
            for b in batches:
                shift = n % len(VARIANTS)
                order = VARIANTS[shift:] + VARIANTS[:shift]
                for name in order:
                    label = f"{name} B={b} round {n + 1}"
                    result = runners[name](label, Path(tmp) / f"{n}-{name}-{b}", b)
                    got.setdefault((name, b), []).append(result)
                    print(f"  {label}: {result.throughput(args.skip):.1f} samples/s "
                          f"({result.start.allocator}; {result.start.placement})", flush=True)
    print()
    print(f"One CPU rank, simple_cnn, synthetic, {args.cores} core(s); median samples/s over "
          f"steps {args.skip + 1}..{args.steps}, {args.rounds} interleaved rounds")
    print()
    rows = []
    for b in batches:
        x = {name: [r.throughput(args.skip) for r in got[(name, b)]] for name in VARIANTS}
        med = {name: statistics.median(v) for name, v in x.items()}
        per_round = [c / r for c, r in zip(x["corral"], x["run_cpu"], strict=True)]
        speedup = [c / r for c, r in zip(x["corral"], x["before"], strict=True)]
        fetch = [p / c for p, c in zip(x["prefetch"], x["corral"], strict=True)]
        rows.append([b, *(f"{med[v]:.1f} ({min(x[v]):.0f}-{max(x[v]):.0f})" for v in VARIANTS),
                     f"{med['corral'] / med['run_cpu']:.3f} (rounds {min(per_round):.2f}-"
                     f"{max(per_round):.2f})",
                     f"{med['corral'] / med['before']:.2f} (rounds {min(speedup):.2f}-"
                     f"{max(speedup):.2f})",
                     f"{med['prefetch'] / med['corral']:.3f} (rounds {min(fetch):.2f}-"
                     f"{max(fetch):.2f})"])
    print(markdown_table(["B", "corral (min-max)", "run_cpu (min-max)", "before (min-max)",
                          "prefetch (min-max)", "corral / run_cpu", "corral / before",
                          "prefetch / corral"], rows))
    print()
    for row in rows:
        ratio = float(str(row[5]).split()[0])
        print(f"B={row[0]}: corral / run_cpu = {ratio:.3f} (target >= {TARGET_RUN_CPU}: "
              f"{'met' if ratio >= TARGET_RUN_CPU else 'MISSED'})")
    return 0


if __name__ == "__main__":
    run_main(main)
