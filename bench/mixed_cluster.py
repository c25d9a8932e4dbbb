"""Mixed-cluster benchmark: a host that cannot pay for its gradient exchange costs nothing, and
one that can pays.

Real torchrun ranks on this machine (gloo, CPU, one thread each), dynamic policy from an equal
split, each three-rank cluster against the two fast ranks alone on the same model:

(a) slowdowns 1,1,60 on the wide MLP of tests/trainer/scenarios/test_active_set.py
    (examples/tasks/curve.py with hidden=2880, 8.3 M parameters: its gradient exchange
    outweighs its compute at B=24): the slow rank should sit out of the exchange, so the three
    do as well as the two (goal >= 0.97);
(b) slowdowns 1,1,3 on simple_cnn (B=96: its compute outweighs its exchange): the third rank
    pays for its exchange and should add throughput (goal >= 1.10).

A third rank can add throughput only with a core of its own: on a machine with fewer cores than
the three ranks, (b) cannot be met by any split, and the bench says so. ``--scale S`` multiplies
every rank's slowdown by S (the pairs' too), so that the emulated time, not the shared cores,
sets the speeds there (each rank then computes 1/S of its time): the ratios between the ranks
stay those of the case. Every round runs the
four configurations once, the order rotating between rounds. Throughput: the median of rank 0's
per-step samples/s after the warm-up steps (the dynamic policy needs them to bench or fill the
third rank), then the median over rounds; the spread over rounds is printed as the noise. The
machine's load average is printed before and after: a shared machine makes the figures noisy.

    python bench/mixed_cluster.py [--rounds N] [--steps N] [--skip N] [--scale S]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RunResult, csv, markdown_table, run_main, run_trainer
from trainer.balance.solve import equal_split


@dataclass(frozen=True)
class Case:
    """One three-rank cluster, measured against its two fast ranks alone."""

    name: str
    slowdowns: tuple[float, float, float]
    task: tuple[str, ...]
    """The trainer's task flags (none: simple_cnn on synthetic images)."""
    global_batch: int
    goal: float
    """Its samples/s over the pair's."""


WIDE_TASK = ("--task", "examples/tasks/curve.py:build", "--task-option", "hidden=2880",
             "--task-option", "samples=2048", "--lr", "0.0005", "--seed", "3")
"""The wide MLP of tests/trainer/scenarios/test_active_set.py."""
CASES = (Case("1,1,60", (1.0, 1.0, 60.0), WIDE_TASK, 24, 0.97),
         Case("1,1,3", (1.0, 1.0, 3.0), (), 96, 1.10))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=60, help="steps per run")
    parser.add_argument("--skip", type=int, default=30,
                        help="warm-up steps not measured (the balancer settles in them)")
    parser.add_argument("--rebalance-every", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every rank's slowdown by this (see above)")
    return parser.parse_args(argv)


def configurations() -> list[tuple[str, Case, tuple[float, ...]]]:
    """The runs of one round: each case's pair, then the case itself."""
    runs: list[tuple[str, Case, tuple[float, ...]]] = []
    for case in CASES:
        runs += [(f"{case.name}: 2 fast ranks alone", case, case.slowdowns[:2]),
                 (f"{case.name}: 3 ranks", case, case.slowdowns)]
    return runs


def scaled(slowdowns: tuple[float, ...], args: argparse.Namespace) -> tuple[float, ...]:
    """The ranks' slowdowns as the run gets them (``--scale``)."""
    return tuple(s * args.scale for s in slowdowns)


def split_flags(case: Case, ranks: int, args: argparse.Namespace) -> list[str]:
    """The equal starting split and the decision interval of a run with ``ranks`` ranks."""
    return ["--split", csv(equal_split(case.global_batch, ranks)),
            "--rebalance-every", str(args.rebalance_every)]


def one_run(name: str, case: Case, slowdowns: tuple[float, ...], args: argparse.Namespace,
            run_dir: Path) -> RunResult:
    return run_trainer(name, run_dir, nproc=len(slowdowns), global_batch=case.global_batch,
                       steps=args.steps, policy="dynamic", slowdown=scaled(slowdowns, args),
                       task=case.task, timeout_s=1800,
                       extra=split_flags(case, len(slowdowns), args))


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = configurations()
    got: dict[str, list[RunResult]] = {name: [] for name, _, _ in runs}
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} usable cores, slowdowns x{args.scale:g}, {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="corral-mixed-") as tmp:
        for n in range(args.rounds):
            shift = n % len(runs)
            for name, case, slowdowns in runs[shift:] + runs[:shift]:
                run_dir = Path(tmp) / f"{name.replace(' ', '_').replace(',', '-')}-{n}"
                got[name].append(one_run(f"{name} #{n + 1}", case, slowdowns, args, run_dir))
    print(f"after: {load()}\n")
    rows, met = [], True
    for name, case, slowdowns in runs:
        pair = statistics.median(r.throughput(args.skip)
                                 for r in got[f"{case.name}: 2 fast ranks alone"])
        rates = [r.throughput(args.skip) for r in got[name]]
        ratio = statistics.median(rates) / pair
        judged = len(slowdowns) == 3
        met = met and (not judged or ratio >= case.goal)
        rows.append((name, f"{statistics.median(rates):.1f}",
                     f"{min(rates):.1f}-{max(rates):.1f}", f"{ratio:.3f}",
                     f">= {case.goal:.2f}" if judged else "", csv(got[name][-1].final_split)))
    print(markdown_table(("cluster", "samples/s (median)", "range over rounds",
                          "x pair", "goal", "final split (last round)"), rows))
    for name, _, slowdowns in runs:
        for event in (got[name][-1].rebalances if len(slowdowns) == 3 else ()):
            if event.reason:
                print(f"  {name}, step {event.step}: {event.reason}")
    if cores < 3 and args.scale == 1:
        print(f"\nonly {cores} cores for 3 ranks: the pair already keeps every core busy, so "
              "no split lets a third rank add throughput here (goal (b) needs 3 cores, or "
              "--scale)")
    return 0 if met else 1


if __name__ == "__main__":
    run_main(main)
