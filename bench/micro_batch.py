"""Micro-batch benchmark: a fast rank with little memory, capped share vs micro-batches.

Two CPU ranks (one thread each) train simple_cnn on synthetic data; rank 1 is emulated 3x
slower (``--slowdown 1,3``) and rank 0, the fast one, can hold only ``--cap`` samples per
forward/backward (its "memory"). Side by side, interleaved, in one invocation:

- ``capped share`` — the behaviour before micro-batches: the memory cap caps rank 0's share
  (``--max-batch CAP,-``), so the slow rank must take the rest of the global batch;
- ``micro-batches`` — the cap is rank 0's micro-batch (``--micro-batch CAP,-``): it takes its
  speed-fair share in ``ceil(share/CAP)`` passes, one all-reduce per step;
- ``no cap`` — the same pair with unlimited memory (the bound micro-batches approach).

All three use the proportional policy (capacities from the warm-up). Throughput is the median
of the per-step throughput (global batch / rank 0's ``step_s``) after the warm-up steps;
with ``--rounds N`` the median over rounds.

    python bench/micro_batch.py [--quick] [--rounds N] [--global-batch B] [--cap C]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RunResult, csv, markdown_table, run_main, run_trainer

SLOWDOWN = (1.0, 3.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--global-batch", type=int, default=256, help="B (default 256)")
    parser.add_argument("--cap", type=int, default=32,
                        help="rank 0's memory cap in samples per pass (default 32)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the set this many times, interleaved, and report medians")
    parser.add_argument("--run-root", type=Path, help="keep run directories here")
    args = parser.parse_args(argv)
    steps, skip = (16, 6) if args.quick else (40, 12)
    B, cap = args.global_batch, args.cap
    variants = {
        "capped share (before)": ["--max-batch", f"{cap},-"],
        "micro-batches": ["--micro-batch", f"{cap},-"],
        "no cap (bound)": [],
    }
    results: dict[str, list[RunResult]] = {label: [] for label in variants}
    with tempfile.TemporaryDirectory(prefix="corral-micro-") as tmp:
        root = args.run_root or Path(tmp)
        print(f"micro-batch benchmark: B={B}, rank 0 cap {cap}, slowdown {csv(SLOWDOWN)}, "
              f"runs in {root}")
        for n in range(args.rounds):
            for label, extra in variants.items():
                run_dir = root / f"{n}-{label.split()[0]}"
                results[label].append(run_trainer(
                    label, run_dir, nproc=2, global_batch=B, steps=steps,
                    policy="proportional", slowdown=SLOWDOWN, extra=extra))

        def x(label: str) -> float:
            return statistics.median(r.throughput(skip) for r in results[label])

        before = x("capped share (before)")
        rows = []
        for label in variants:
            runs = results[label]
            per_round = ", ".join(f"{r.throughput(skip):.1f}" for r in runs)
            rows.append([label, csv(runs[-1].start.split), f"{x(label):.1f}", per_round,
                         f"{x(label) / before:.2f}"])
        rounds = f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else ""
        print()
        print(f"Micro-batches: 2 CPU ranks x 1 thread, slowdown {csv(SLOWDOWN)}, rank 0 holds "
              f"{cap} samples per pass, simple_cnn, synthetic, B={B}, proportional; median "
              f"samples/s over steps {skip + 1}..{steps}{rounds}")
        print()
        print(markdown_table(["run", "split", "samples/s", "per round", "vs capped"], rows))
        print()
        print(f"micro-batches / capped share = {x('micro-batches') / before:.3f}")
        print(f"micro-batches / no cap       = {x('micro-batches') / x('no cap (bound)'):.3f}")
    return 0


if __name__ == "__main__":
    run_main(main)
