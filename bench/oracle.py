"""Oracle benchmark: the balancer against the best static split there is, found by search.

"Σ solo throughput" assumes ranks do not disturb each other; ranks sharing a host do, so that
sum is out of reach. The yardstick here is the best static split found by trying splits: the
"oracle". For emulated unequal ranks on this machine (``--slowdowns``), in one invocation:

1. Search: static splits around the proportional one (b ∝ 1/slowdown): a coarse pattern (the
   proportional split, then moves of ``B/16`` samples between neighbouring ranks, two sizes
   for two ranks), then a fine one around the best coarse split (half the move, at least 1).
   Every candidate runs once per round, candidates interleaved, medians over rounds.
2. Compare, interleaved round after round: the oracle split (static) again, the equal split
   (static), ``proportional`` (warm-up capacities) and ``dynamic`` from an equal start, and
   each rank alone at B (Σ solo: the loose upper bound).

Throughput: median of rank 0's per-step samples/s after the warm-up steps. "Where the time
goes", per configuration (per-step medians in each round, then the median over rounds): the
slowest rank's forward+backward (emulated slowdown included), the mean wait of the other ranks
for it, and the rest of the step, split into the optimizer + data + Python part (the one-rank
runs' rest, which have no all-reduce) and the exposed all-reduce (the rest beyond that). For
the dynamic runs: the split's trajectory, when it first came within the fine move of the
oracle split and how much of the measured steps it spent there; and every rank's compute
jitter at the oracle split (an emulated slowdown multiplies a rank's jitter by its factor).
Goals: dynamic >= 0.95 x oracle and >= 1.6 x equal.

``--task causal_lm`` trains the causal_lm task (LoRA on the tiny generated model of
``python -m trainer.tiny_lm``, sequences of 128 tokens; B counts sequences) instead of
simple_cnn on synthetic images.

    python bench/oracle.py [--ranks 2|3] [--global-batch B] [--rounds N] [--search-rounds N]
                           [--task image|causal_lm]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._breakdown import Breakdown, jitter, median_breakdown, near_target, trajectory
from bench._common import (
    RunResult,
    causal_lm_task,
    corral_env,
    csv,
    markdown_table,
    run_main,
    run_trainer,
)
from trainer.balance.solve import equal_split, proportional_split

SLOWDOWNS = {2: (1.0, 3.0), 3: (1.0, 2.0, 3.0)}
GOAL_ORACLE = 0.95
GOAL_EQUAL = 1.6
Split = tuple[int, ...]


@dataclass(frozen=True)
class Lengths:
    """Steps per run and warm-up steps not measured, for each phase."""

    search_steps: int
    search_skip: int
    steps: int
    skip: int


def pattern(center: Split, move: int, *, wide: bool) -> list[Split]:
    """``center`` and its neighbours: ``move`` samples (and ``2 * move`` when ``wide``) from
    each rank to the next and back; shares stay >= 1."""
    out = [center]
    sizes = (move, 2 * move) if wide else (move,)
    for i in range(len(center) - 1):
        for size in sizes:
            for sign in (1, -1):
                split = list(center)
                split[i] += sign * size
                split[i + 1] -= sign * size
                if min(split) >= 1 and tuple(split) not in out:
                    out.append(tuple(split))
    return out


def _x(results: list[RunResult], skip: int) -> float:
    return statistics.median(r.throughput(skip) for r in results)


def measure(splits: list[Split], rounds: int, args: argparse.Namespace, root: Path,
            tag: str, lengths: Lengths) -> dict[Split, list[RunResult]]:
    """Every split as a static run, once per round, the order rotating between rounds."""
    got: dict[Split, list[RunResult]] = {s: [] for s in splits}
    for n in range(rounds):
        shift = n % len(splits)
        for split in splits[shift:] + splits[:shift]:
            label = f"{tag} {csv(split)} #{n + 1}"
            got[split].append(run_trainer(
                label, root / f"{tag}-{'_'.join(map(str, split))}-{n}", nproc=len(split),
                global_batch=args.global_batch, steps=lengths.search_steps,
                slowdown=args.slowdowns, extra=["--split", csv(split)], task=args.task_flags))
    return got


Rates = Callable[[list[Split], str], dict[Split, float]]
"""Each split of a list run as a static split: its median samples/s (the tag names the
search phase, for labels and run directories)."""


def search_best(slowdowns: Sequence[float], global_batch: int, rates: Rates
                ) -> tuple[Split, dict[Split, float]]:
    """The best static split for ranks at ``slowdowns`` (coarse, then fine, around the
    proportional split) and every candidate's samples/s, each measured by ``rates``."""
    center = proportional_split([1.0 / s for s in slowdowns], global_batch)
    coarse_move = max(1, round(global_batch / 16))
    seen: dict[Split, float] = {}
    for move, wide in ((coarse_move, len(center) == 2), (max(1, coarse_move // 2), False)):
        best = max(seen, key=seen.__getitem__) if seen else center
        todo = [s for s in pattern(best, move, wide=wide) if s not in seen]
        print(f"search around {csv(best)}, move {move}: {len(todo)} split(s)", flush=True)
        if not todo:  # a small B: the fine move is the coarse one, every neighbour was run
            continue
        for split, rate in rates(todo, f"search{move}").items():
            seen[split] = rate
            print(f"    {csv(split)}: {rate:.1f} samples/s", flush=True)
    return max(seen, key=seen.__getitem__), seen


def search(args: argparse.Namespace, root: Path, lengths: Lengths
           ) -> tuple[Split, dict[Split, float]]:
    """The best static split of corral's own loop and every candidate's median samples/s."""
    def rates(todo: list[Split], tag: str) -> dict[Split, float]:
        runs = measure(todo, args.search_rounds, args, root, tag, lengths)
        return {split: _x(got, lengths.search_skip) for split, got in runs.items()}

    return search_best(args.slowdowns, args.global_batch, rates)


def compare(args: argparse.Namespace, root: Path, oracle: Split, lengths: Lengths
            ) -> dict[str, list[RunResult]]:
    """Oracle, equal, proportional, dynamic (from equal) and solo runs, interleaved."""
    B, world = args.global_batch, len(args.slowdowns)
    equal = equal_split(B, world)
    kinds: list[tuple[str, int, str, list[float], list[str]]] = [
        ("oracle", world, "static", list(args.slowdowns), ["--split", csv(oracle)]),
        ("equal", world, "static", list(args.slowdowns), ["--split", csv(equal)]),
        ("proportional", world, "proportional", list(args.slowdowns), []),
        ("dynamic", world, "dynamic", list(args.slowdowns), ["--split", csv(equal)]),
    ]
    kinds += [(f"solo rank {r} (x{s:g})", 1, "static", [s], [])
              for r, s in enumerate(args.slowdowns)]
    got: dict[str, list[RunResult]] = {k[0]: [] for k in kinds}
    for n in range(args.rounds):
        shift = n % len(kinds)
        for name, nproc, policy, slowdown, extra in kinds[shift:] + kinds[:shift]:
            got[name].append(run_trainer(
                f"{name} #{n + 1}", root / f"{name.replace(' ', '_')}-{n}", nproc=nproc,
                global_batch=B, steps=lengths.steps, policy=policy, slowdown=slowdown,
                extra=extra, task=args.task_flags))
    return got


def set_task(args: argparse.Namespace, root: Path) -> None:
    """``args.task_flags`` (the trainer flags of ``args.task``) and ``args.task_label``."""
    if getattr(args, "task", "image") == "causal_lm":
        args.task_flags = causal_lm_task(root / "lm")
        args.task_label = "causal_lm (tiny LM, LoRA, 128-token sequences)"
    else:
        args.task_flags, args.task_label = [], "simple_cnn, synthetic"


def report(args: argparse.Namespace, lengths: Lengths, oracle: Split,
           searched: dict[Split, float], got: dict[str, list[RunResult]]) -> None:
    skip = lengths.skip
    x = {name: [r.throughput(skip) for r in runs] for name, runs in got.items()}
    med = {name: statistics.median(v) for name, v in x.items()}
    solo_sum = sum(v for name, v in med.items() if name.startswith("solo"))
    print()
    print(f"Oracle: {len(args.slowdowns)} CPU ranks x 1 thread, slowdowns "
          f"{csv(args.slowdowns)}, {args.task_label}, B={args.global_batch}; allocator "
          f"{got['oracle'][0].start.allocator}; medians of {args.rounds} interleaved rounds "
          f"over steps {skip + 1}..{lengths.steps} (search: {args.search_rounds} round(s), "
          f"steps {lengths.search_skip + 1}..{lengths.search_steps})")
    print()
    print("Search (static splits, samples/s): " + "; ".join(
        f"{csv(s)} {v:.1f}" for s, v in sorted(searched.items(), key=lambda kv: -kv[1])))
    print()
    parts = {name: median_breakdown(runs, skip) for name, runs in got.items()}
    solo_rest = statistics.median(p.rest for n, p in parts.items() if n.startswith("solo"))
    rows = [[name, _splits(runs), f"{med[name]:.1f}", f"{min(x[name]):.0f}-{max(x[name]):.0f}",
             f"{med[name] / med['oracle']:.3f}", f"{med[name] / med['equal']:.2f}",
             *_time_columns(parts[name], solo_rest, name.startswith("solo"))]
            for name, runs in got.items()]
    rows.append(["Σ solo (loose bound)", "-", f"{solo_sum:.1f}", "-",
                 f"{solo_sum / med['oracle']:.3f}", f"{solo_sum / med['equal']:.2f}",
                 *["-"] * 6])
    print(markdown_table(["run", "split (last round)", "samples/s", "rounds min-max",
                          "vs oracle", "vs equal", "step ms", "slowest compute ms",
                          "mean wait ms", "rest ms", "exposed all-reduce ms",
                          "optimizer + data + Python ms"], rows))
    print()
    _dynamic(args, got["dynamic"], oracle, skip)
    _jitter(got["oracle"], skip)
    dyn = med["dynamic"]
    print()
    print(f"oracle split {csv(oracle)}; oracle / Σ solo = {med['oracle'] / solo_sum:.3f}")
    for label, value, goal in (("dynamic / oracle", dyn / med["oracle"], GOAL_ORACLE),
                               ("dynamic / equal ", dyn / med["equal"], GOAL_EQUAL)):
        print(f"{label} = {value:.3f} (goal >= {goal}: {'met' if value >= goal else 'MISSED'})")
    print(f"proportional / oracle = {med['proportional'] / med['oracle']:.3f}")


def _splits(runs: list[RunResult]) -> str:
    last = runs[-1]
    split = csv(last.start.split)
    if last.rebalances:
        split += f" → {csv(last.final_split)} ({len(last.rebalances)})"
    return split


def _time_columns(parts: Breakdown, solo_rest: float, solo: bool) -> list[str]:
    """step, slowest compute, wait, rest, exposed all-reduce, optimizer + data + Python (ms):
    the one-rank runs' rest is the part of a step that is not communication."""
    exposed = "-" if solo else f"{1000 * max(parts.rest - solo_rest, 0.0):.1f}"
    own = parts.rest if solo else min(solo_rest, parts.rest)
    return [f"{1000 * v:.1f}" for v in (parts.step, parts.compute, parts.wait, parts.rest)] + [
        exposed, f"{1000 * own:.1f}"]


def _dynamic(args: argparse.Namespace, runs: list[RunResult], oracle: Split, skip: int) -> None:
    """How each dynamic run's split moved against the oracle split."""
    tolerance = max(1, max(1, round(args.global_batch / 16)) // 2)
    print(f"Dynamic runs' splits (→@STEP: first step with the new split; (speed): the decision "
          f"read a rank's speed change) against the oracle split {csv(oracle)} "
          f"(± {tolerance} per rank, the fine search move):")
    for n, run in enumerate(runs, start=1):
        first, share = near_target(run, oracle, tolerance, skip)
        print(f"- round {n}: {trajectory(run)}; first near the oracle split at step "
              f"{first if first is not None else 'never'}; near it for {100 * share:.0f} % of "
              f"steps {skip + 1}..")


def _jitter(runs: list[RunResult], skip: int) -> None:
    """Every rank's compute time and its step-to-step spread at the oracle split."""
    per_round = [jitter(r, skip) for r in runs]
    ranks = []
    for rank in range(len(per_round[0])):
        factor = per_round[0][rank][0]
        m = statistics.median(j[rank][1] for j in per_round)
        spread = statistics.median(j[rank][2] for j in per_round)
        ranks.append(f"rank {rank} (x{factor:g}) {1000 * m:.1f} ms ± {100 * spread:.0f} %")
    print("Compute at the oracle split (median, step-to-step MAD): " + "; ".join(ranks))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, choices=sorted(SLOWDOWNS), default=2,
                        help="2 ranks at slowdowns 1:3, or 3 at 1:2:3")
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved comparison rounds")
    parser.add_argument("--search-rounds", type=int, default=2, help="rounds per search step")
    parser.add_argument("--steps", type=int, default=100, help="steps of a comparison run")
    parser.add_argument("--skip", type=int, default=40,
                        help="steps not measured (dynamic starts equal and must move first)")
    parser.add_argument("--search-steps", type=int, default=50)
    parser.add_argument("--search-skip", type=int, default=15)
    parser.add_argument("--run-root", type=Path, help="keep run directories here")
    parser.add_argument("--task", choices=("image", "causal_lm"), default="image",
                        help="simple_cnn on synthetic images, or causal_lm on the tiny "
                        "generated model (B in sequences of 128 tokens)")
    args = parser.parse_args(argv)
    args.slowdowns = SLOWDOWNS[args.ranks]
    lengths = Lengths(search_steps=args.search_steps, search_skip=args.search_skip,
                      steps=args.steps, skip=args.skip)
    with tempfile.TemporaryDirectory(prefix="corral-oracle-") as tmp:
        root = args.run_root or Path(tmp)
        set_task(args, root)
        print(f"oracle benchmark: slowdowns {csv(args.slowdowns)}, B={args.global_batch}, "
              f"allocator env {corral_env()}, runs in {root}", flush=True)
        oracle, searched = search(args, root, lengths)
        got = compare(args, root, oracle, lengths)
        report(args, lengths, oracle, searched, got)
    return 0


if __name__ == "__main__":
    run_main(main)
