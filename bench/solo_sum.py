"""The cluster against its hosts alone: each host alone, all alone at once, then the cluster.

Issue 84's baselines, measured: on this machine's CPU, "hosts" are ranks with an emulated
slowdown (``--slowdown``, as bench/oracle.py makes its slow ranks; one thread each). For every
scenario, in one invocation and once per round (rounds interleaved, scenarios and arms rotating,
the load average noted as each arm starts), three arms: **solo**, each host alone (one rank, the
whole global batch B, static); **concurrent solo**, every host's solo loop at the same time, each
its own launch and process group, no exchange (a faster host runs proportionally more steps, and
each host's rate counts only the steps run while every host ran past its warm-up); and the
**cluster** (every host, the default policy, ``dynamic``, from the capacities it measures at its
start). Printed per scenario, as medians over rounds with their spread: each host's solo
samples/s, Σ solo, Σ concurrent solo, the cluster's, **% of Σ solo**, split into the machine's
co-location loss (Σ concurrent solo ÷ Σ solo: hosts that share this machine's caches, memory
bandwidth and cores' clock slow each other, whoever trains them) and corral's own (cluster ÷ Σ
concurrent solo), **× fastest**, and the run's own figures (``figures/solo.py``, from the solo
probes the run timed at its start). Corral's own loss is then split by cause, over the cluster's
steps after the warm-up (``Parts``): the hosts' rates at their shares against at B, the split's
balance, the per-step jitter, the time outside compute. Goals: >= 0.95 × Σ solo where the hosts are
compute-bound (the 1:3 pair, three unequal hosts); >= 1.0 × fastest where a host's exchange
does not pay (a host 16 times slower).

Scenarios: ``pair`` (slowdowns 1:3, the oracle bench's pair), ``three`` (1:2:3), ``slow``
(1:16: the slow host adds at most 1/16 of the fast one's throughput, about what its
exchange costs). A host behind a shaped link needs network-namespace hosts with sshd
(bench/lowcomm_shaped.py): not here.

The hosts share this machine's cores: ranks that together want more cores than there are, or a
machine loaded by other work, cannot reach the sum of what each does alone, which the
concurrent solo arm measures. ``--scale S`` multiplies every slowdown by S (as
bench/mixed_cluster.py does): each rank then sleeps most of its emulated time, so the emulated
speeds, not the shared cores, set the pace.

    python bench/solo_sum.py [--scenarios pair,three,slow] [--global-batch 64] [--rounds 2]
                             [--steps 60] [--skip 20] [--scale 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    RunResult,
    corral_env,
    csv,
    launcher,
    markdown_table,
    run_main,
    run_together,
    run_trainer,
    trainer_flags,
)
from bench._loss_split import Parts, cluster_parts, concurrent_steps, overlap_rates
from figures.reducer import RunFigures
from figures.solo import SoloBaseline, run_baseline
from trainer.event_log import events_path
from trainer.events import StepEvent, parse_event

SCENARIOS: dict[str, tuple[float, ...]] = {"pair": (1.0, 3.0), "three": (1.0, 2.0, 3.0),
                                           "slow": (1.0, 16.0)}
GOAL_OF_SUM = 0.95
"""Compute-bound hosts (pair, three): the cluster against Σ of the hosts alone."""
GOAL_FASTEST = 1.0
"""A host whose exchange does not pay (slow): the cluster against its fastest host alone."""


ARMS = ("solo", "concurrent", "cluster")
"""A scenario's arms: each host alone, every host's solo loop at once, the cluster."""


@dataclass
class Round:
    """One round of one scenario: each host alone, all alone at once, then the cluster."""

    solo: list[float]
    concurrent: list[float]
    """Each host's solo samples/s while every host ran its solo loop at once (no exchange)."""
    cluster: float
    own: SoloBaseline
    split: str
    parts: Parts
    """Where the cluster's time went after the warm-up: corral's own loss, by cause."""
    load: dict[str, float] = field(default_factory=dict)
    """The machine's 1-minute load average as each arm started, by arm."""

    @property
    def of_sum(self) -> float:
        return self.cluster / sum(self.solo)

    @property
    def x_fastest(self) -> float:
        return self.cluster / max(self.solo)

    @property
    def co_location(self) -> float:
        """Σ concurrent solo ÷ Σ solo: what the hosts keep of their solo rates when they share
        this machine (caches, memory bandwidth, the cores' clock): the machine's loss."""
        return sum(self.concurrent) / sum(self.solo)

    @property
    def corral_own(self) -> float:
        """Cluster ÷ Σ concurrent solo: corral's own loss (exchange, balancing, benching), the
        machine's left out. ``of_sum`` = ``co_location`` × ``corral_own``."""
        return self.cluster / sum(self.concurrent)


def schedule(names: list[str], rounds: int) -> list[tuple[int, str, str]]:
    """``(round, scenario, arm)`` in the order they run: round n rotates the scenarios and,
    within each, the arms by n-1 places, so no arm always runs first or right after another
    scenario's cluster (a drifting machine load spreads over every arm)."""
    order = []
    for n in range(1, rounds + 1):
        shift = n - 1
        for name in names[shift % len(names):] + names[:shift % len(names)]:
            for arm in ARMS[shift % len(ARMS):] + ARMS[:shift % len(ARMS)]:
                order.append((n, name, arm))
    return order


def rank_steps(run: RunResult) -> list[list[StepEvent]]:
    """Every rank's step events of ``run``."""
    ranks = []
    for rank in range(run.start.world_size):
        with open(events_path(run.run_dir, rank), encoding="utf-8") as f:
            ranks.append([e for e in map(parse_event, f) if isinstance(e, StepEvent)])
    return ranks


def run_figures(run: RunResult) -> RunFigures:
    """Every rank's events of ``run`` reduced (each rank its own host)."""
    figures = RunFigures()
    for rank in range(run.start.world_size):
        with open(events_path(run.run_dir, rank), encoding="utf-8") as f:
            for line in f:
                event = parse_event(line)
                if event is not None:
                    figures.observe(event, f"h{rank}")
    return figures


def solo_arm(name: str, slowdowns: tuple[float, ...], args: argparse.Namespace, root: Path,
             n: int) -> list[float]:
    """Each host alone, one after the other."""
    return [run_trainer(f"{name} h{r} alone (x{s:g}) #{n}", root / f"{name}-h{r}-{n}", nproc=1,
                        global_batch=args.global_batch, steps=args.steps, slowdown=[s]
                        ).throughput(args.skip) for r, s in enumerate(slowdowns)]


def concurrent_arm(name: str, slowdowns: tuple[float, ...], args: argparse.Namespace,
                   root: Path, n: int) -> list[float]:
    """Every host's solo loop at once, each its own launch (no exchange): their rates while
    all ran."""
    steps = concurrent_steps(slowdowns, args.steps)
    runs = [(f"{name} h{r} concurrent solo (x{s:g}) #{n}",
             [*launcher(1), *trainer_flags(global_batch=args.global_batch, steps=k,
                                           run_dir=root / f"{name}-h{r}-together-{n}",
                                           slowdown=[s])],
             root / f"{name}-h{r}-together-{n}")
            for r, (s, k) in enumerate(zip(slowdowns, steps, strict=True))]
    print(f"  {name} concurrent solo #{n}: {len(runs)} launches at once, B={args.global_batch},"
          f" steps {csv(steps)} ...", flush=True)
    results = run_together(runs, env=corral_env())
    return overlap_rates([r.steps for r in results], args.global_batch, args.skip)


def cluster_arm(name: str, slowdowns: tuple[float, ...], args: argparse.Namespace, root: Path,
                n: int) -> dict[str, Any]:
    """The cluster: every host, ``dynamic``; its rate, split and own figures."""
    run = run_trainer(f"{name} cluster #{n}", root / f"{name}-cluster-{n}", nproc=len(slowdowns),
                      global_batch=args.global_batch, steps=args.steps, policy="dynamic",
                      slowdown=list(slowdowns))
    split = csv(run.start.split) + (f" → {csv(run.final_split)}" if run.rebalances else "")
    return {"cluster": run.throughput(args.skip),
            "own": run_baseline(run_figures(run), live=False), "split": split,
            "parts": cluster_parts(rank_steps(run), args.skip)}


def _spread(values: list[float], digits: int = 1) -> str:
    med = statistics.median(values)
    return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def report(name: str, slowdowns: tuple[float, ...], rounds: list[Round]) -> list[str]:
    """One table row of a scenario: medians over rounds (min-max)."""
    solos = [_spread([r.solo[h] for r in rounds]) for h in range(len(slowdowns))]
    own = [r.own for r in rounds]
    own_text = " / ".join(
        f"{b.of_sum:.2f}, {b.x_fastest:.2f}× ({b.sources})" if b.of_sum is not None
        and b.x_fastest is not None else f"unknown ({b.sources})" for b in own)
    return [name, csv(slowdowns), "; ".join(solos), _spread([sum(r.solo) for r in rounds]),
            _spread([sum(r.concurrent) for r in rounds]), _spread([r.cluster for r in rounds]),
            _spread([r.of_sum for r in rounds], 3), _spread([r.co_location for r in rounds], 3),
            _spread([r.corral_own for r in rounds], 3), _spread([r.x_fastest for r in rounds], 2),
            own_text, rounds[-1].split,
            _spread([r.parts.ideal / sum(r.concurrent) for r in rounds], 3),
            *(_spread([getattr(r.parts, part) for r in rounds], 3)
              for part in ("balance", "jitter", "outside"))]


HEADER = ["scenario", "slowdowns", "each host alone, samples/s", "Σ solo", "Σ concurrent solo",
          "cluster", "% of Σ solo", "machine: Σ concurrent ÷ Σ solo",
          "corral: cluster ÷ Σ concurrent", "× fastest",
          "the run's own (of Σ, × fastest; per round)", "split (last round)",
          "corral's, by cause: hosts at their shares ÷ Σ concurrent", "balance", "jitter",
          "outside compute"]


def verdicts(results: dict[str, list[Round]]) -> list[str]:
    """Each scenario's ratio against its goal, then what of the gap is the machine's
    (co-location) and what corral's own, as medians over rounds (min-max)."""
    lines = []
    for name, rounds in results.items():
        if name == "slow":
            value, goal, what = statistics.median(r.x_fastest for r in rounds), GOAL_FASTEST, \
                "× fastest"
        else:
            value, goal, what = statistics.median(r.of_sum for r in rounds), GOAL_OF_SUM, \
                "of Σ solo"
        lines.append(f"{name}: {value:.3f} {what} (goal >= {goal}: "
                     f"{'met' if value >= goal else 'MISSED'}); machine "
                     f"{_spread([r.co_location for r in rounds], 3)}, corral "
                     f"{_spread([r.corral_own for r in rounds], 3)}")
    return lines


def load_lines(results: dict[str, list[Round]]) -> list[str]:
    """The 1-minute load average as each arm started, per scenario and round: how quiet the
    machine was while each figure was measured."""
    return [f"load {name} #{n}: " + ", ".join(f"{arm} {r.load[arm]:.1f}" for arm in ARMS
                                               if arm in r.load)
            for name, rounds in results.items() for n, r in enumerate(rounds, 1)]


ARM_RUNNERS = {"solo": solo_arm, "concurrent": concurrent_arm, "cluster": cluster_arm}


def measure(scenarios: dict[str, tuple[float, ...]], args: argparse.Namespace,
            root: Path) -> dict[str, list[Round]]:
    """Every scenario's arms, interleaved as ``schedule`` orders them."""
    parts: dict[tuple[str, int], dict[str, Any]] = {}
    for n, name, arm in schedule(list(scenarios), args.rounds):
        part = parts.setdefault((name, n), {"load": {}})
        part["load"][arm] = os.getloadavg()[0]
        value = ARM_RUNNERS[arm](name, scenarios[name], args, root, n)
        if isinstance(value, dict):
            part.update(value)
        else:
            part[arm] = value
    return {name: [Round(**parts[(name, n)]) for n in range(1, args.rounds + 1)]
            for name in scenarios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="pair,three,slow",
                        help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip", type=int, default=20,
                        help="steps not measured (the balancer settles first)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every slowdown by this (>= 1: fewer cores than ranks)")
    parser.add_argument("--run-root", type=Path, help="keep run directories here")
    args = parser.parse_args(argv)
    names = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}: choose of "
                     f"{', '.join(SCENARIOS)}")
    if args.skip >= args.steps:
        parser.error("--skip must be below --steps")
    if args.scale < 1.0:
        parser.error("--scale must be at least 1")
    scenarios = {name: tuple(s * args.scale for s in SCENARIOS[name]) for name in names}
    with tempfile.TemporaryDirectory(prefix="corral-solo-sum-") as tmp:
        root = args.run_root or Path(tmp)
        os.environ["CORRAL_PROFILE_DIR"] = str(root / "profiles")  # probes of this bench only
        load = os.getloadavg()
        print(f"solo_sum: B={args.global_batch}, scale {args.scale:g}, {args.rounds} round(s), "
              f"steps {args.skip + 1}..{args.steps}, {os.cpu_count()} cores, load "
              f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
        results = measure(scenarios, args, root)
        load = os.getloadavg()
    print(f"\nload after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; medians over "
          f"{args.rounds} round(s) (min-max)\n")
    print(markdown_table(HEADER, [report(name, scenarios[name], rounds)
                                  for name, rounds in results.items()]))
    print()
    print("\n".join(load_lines(results)))
    print("\n".join(verdicts(results)))
    return 0


if __name__ == "__main__":
    run_main(main)
