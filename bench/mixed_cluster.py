"""Mixed-cluster benchmark: a host that cannot pay for its gradient exchange costs nothing.

Real torchrun ranks on this machine (gloo, CPU, one thread each) train the wide MLP of
tests/trainer/test_active_set.py (examples/tasks/curve.py with hidden=2880, 8.3 M parameters:
its gradient exchange outweighs its compute at B=24), dynamic policy from an equal split:

(a) three ranks emulated at slowdowns 1,1,60 against the two fast ranks alone: the slow rank
    should sit out of the exchange, so the three do as well as the two (goal >= 0.97);
(b) three ranks at 1,1,3 against the two alone: the third rank pays for its exchange and should
    add throughput (goal >= 1.10).

Every round runs the three configurations once, the order rotating between rounds. Throughput:
the median of rank 0's per-step samples/s after the warm-up steps (the dynamic policy needs them
to bench or fill the third rank), then the median over rounds; the spread over rounds is printed
as the noise. The machine's load average is printed before and after: a shared machine makes
the figures noisy.

    python bench/mixed_cluster.py [--rounds N] [--steps N] [--skip N] [--global-batch B]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RunResult, csv, markdown_table, run_main, run_trainer
from trainer.balance.solve import equal_split

WIDE_TASK = ("--task", "examples/tasks/curve.py:build", "--task-option", "hidden=2880",
             "--task-option", "samples=2048", "--lr", "0.0005", "--seed", "3")
"""The wide MLP of tests/trainer/test_active_set.py (its global batch is the bench's flag)."""
PAIR = "2 fast ranks alone"
CASES = {"1,1,60": (1.0, 1.0, 60.0), "1,1,3": (1.0, 1.0, 3.0)}
"""The three-rank clusters, by their slowdowns."""
GOALS = {"1,1,60": 0.97, "1,1,3": 1.10}
"""Each cluster's goal: its samples/s over the pair's."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=60, help="steps per run")
    parser.add_argument("--skip", type=int, default=30,
                        help="warm-up steps not measured (the balancer settles in them)")
    parser.add_argument("--global-batch", type=int, default=24)
    parser.add_argument("--rebalance-every", type=int, default=5)
    return parser.parse_args(argv)


def configurations(args: argparse.Namespace) -> list[tuple[str, tuple[float, ...]]]:
    """The runs of one round: the pair, then each three-rank cluster."""
    return [(PAIR, (1.0, 1.0)), *((f"3 ranks {name}", s) for name, s in CASES.items())]


def split_flags(ranks: int, args: argparse.Namespace) -> list[str]:
    """The equal starting split and the decision interval of a run with ``ranks`` ranks."""
    return ["--split", csv(equal_split(args.global_batch, ranks)),
            "--rebalance-every", str(args.rebalance_every)]


def one_run(name: str, slowdowns: tuple[float, ...], args: argparse.Namespace,
            run_dir: Path) -> RunResult:
    return run_trainer(name, run_dir, nproc=len(slowdowns), global_batch=args.global_batch,
                       steps=args.steps, policy="dynamic", slowdown=slowdowns,
                       task=WIDE_TASK, timeout_s=1800,
                       extra=split_flags(len(slowdowns), args))


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = configurations(args)
    got: dict[str, list[RunResult]] = {name: [] for name, _ in runs}
    print(f"{os.cpu_count()} CPUs, {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="corral-mixed-") as tmp:
        for n in range(args.rounds):
            shift = n % len(runs)
            for name, slowdowns in runs[shift:] + runs[:shift]:
                run_dir = Path(tmp) / f"{name.replace(' ', '_').replace(',', '-')}-{n}"
                got[name].append(one_run(f"{name} #{n + 1}", slowdowns, args, run_dir))
    print(f"after: {load()}\n")
    pair = statistics.median(r.throughput(args.skip) for r in got[PAIR])
    rows = []
    met = True
    for name, _ in runs:
        rates = [r.throughput(args.skip) for r in got[name]]
        ratio = statistics.median(rates) / pair
        case = name.removeprefix("3 ranks ")
        goal = GOALS.get(case)
        met = met and (goal is None or ratio >= goal)
        rows.append((name, f"{statistics.median(rates):.1f}",
                     f"{min(rates):.1f}-{max(rates):.1f}", f"{ratio:.3f}",
                     f">= {goal:.2f}" if goal else "", csv(got[name][-1].final_split)))
    print(markdown_table(("cluster", "samples/s (median)", "range over rounds",
                          "x pair", "goal", "final split (last round)"), rows))
    for name, _ in runs[1:]:
        for result in got[name][-1:]:
            for event in result.rebalances:
                if event.reason:
                    print(f"  {name}, step {event.step}: {event.reason}")
    return 0 if met else 1


if __name__ == "__main__":
    run_main(main)
