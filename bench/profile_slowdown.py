"""Profiling an emulated slow rank: slowdown 3 should report about a third of the throughput.

    python bench/profile_slowdown.py [--model simple_cnn] [--slowdown 3] [--threads 1]
        [--batches 16,32,64] [--repeats 5] [--rounds 3]

Profiles the model on the CPU with slowdown 1 and with ``--slowdown``, exactly as
``python -m trainer.profile_model`` does, alternating for ``--rounds`` rounds, and prints the fitted
samples/s of both at every batch and their ratio (target: 1/slowdown). It also times a few
whole steps by the wall clock, so the emulated sleep is seen to happen, not only reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from profiles.bench import BenchConfig
from trainer.profile_model import make_step, profile_model


def wall_samples_per_s(model: str, slowdown: float, batch: int, steps: int) -> float:
    """Samples/s over ``steps`` whole steps timed by the wall clock (after one warm-up)."""
    step = make_step(model, device="cpu", slowdown=slowdown)
    step(batch)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="simple_cnn")
    parser.add_argument("--slowdown", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="16,32,64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating profile pairs; ratios are medians over rounds")
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batches.split(","))
    torch.manual_seed(0)
    config = BenchConfig(batches=batches, warmup=2, repeats=args.repeats, find_max_batch=False)

    # Alternate the two conditions over several rounds so drifting machine load hits both.
    pairs = []
    for _ in range(args.rounds):
        pairs.append(tuple(
            profile_model(args.model, device="cpu", threads=args.threads, slowdown=factor,
                          config=config)
            for factor in (1.0, args.slowdown)
        ))
    base = pairs[-1][0]
    print(f"model {args.model} on cpu ({base.device_name}), {base.threads} thread(s), "
          f"torch {base.torch_version}, {args.rounds} round(s)")
    for number, (fast_p, slow_p) in enumerate(pairs, 1):
        print(f"round {number}: slowdown 1 t(b) = {fast_p.a:.5f} + {fast_p.c:.6f}*b s; "
              f"slowdown {args.slowdown:g} t(b) = {slow_p.a:.5f} + {slow_p.c:.6f}*b s")
    print()
    print(f"{'batch':>6}  {'samples/s s=1':>14}  {f'samples/s s={args.slowdown:g}':>14}  "
          f"{'ratio':>7}  {'target':>7}   (medians over rounds)")
    ratios = []
    for batch in batches:
        fast_rate = statistics.median(f.samples_per_s(batch) for f, _ in pairs)
        slow_rate = statistics.median(s.samples_per_s(batch) for _, s in pairs)
        ratio = statistics.median(s.samples_per_s(batch) / f.samples_per_s(batch)
                                  for f, s in pairs)
        ratios.append(ratio)
        print(f"{batch:>6}  {fast_rate:>14.1f}  {slow_rate:>14.1f}  {ratio:>7.3f}  "
              f"{1 / args.slowdown:>7.3f}")

    batch = batches[len(batches) // 2]
    wall_fast = wall_samples_per_s(args.model, 1.0, batch, args.repeats)
    wall_slow = wall_samples_per_s(args.model, args.slowdown, batch, args.repeats)
    print()
    print(f"wall clock at batch {batch}: {wall_fast:.1f} vs {wall_slow:.1f} samples/s, "
          f"ratio {wall_slow / wall_fast:.3f}")
    print(f"profiled throughput ratio (median over batches): {statistics.median(ratios):.3f} "
          f"(target {1 / args.slowdown:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
