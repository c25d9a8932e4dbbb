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
goes" (per step, medians): the slowest rank's forward+backward (emulated slowdown included),
the mean wait of the other ranks for it, and the rest of the step (exposed all-reduce,
optimizer, Python), with the one-rank runs' rest as the part that is not communication.
Goals: dynamic >= 0.95 x oracle and >= 1.6 x equal.

    python bench/oracle.py [--ranks 2|3] [--global-batch B] [--rounds N] [--search-rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    RunResult,
    corral_env,
    csv,
    markdown_table,
    run_main,
    run_trainer,
)
from trainer.balancer_solve import equal_split, proportional_split
from trainer.events import StepEvent, events_path, parse_event

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
                slowdown=args.slowdowns, extra=["--split", csv(split)]))
    return got


def search(args: argparse.Namespace, root: Path, lengths: Lengths
           ) -> tuple[Split, dict[Split, float]]:
    """The best static split (coarse, then fine) and every candidate's median samples/s."""
    B = args.global_batch
    center = proportional_split([1.0 / s for s in args.slowdowns], B)
    coarse_move = max(1, round(B / 16))
    seen: dict[Split, float] = {}
    for move, wide in ((coarse_move, len(center) == 2), (max(1, coarse_move // 2), False)):
        best = max(seen, key=seen.__getitem__) if seen else center
        todo = [s for s in pattern(best, move, wide=wide) if s not in seen]
        print(f"search around {csv(best)}, move {move}: {len(todo)} split(s)", flush=True)
        for split, runs in measure(todo, args.search_rounds, args, root, f"search{move}",
                                   lengths).items():
            seen[split] = _x(runs, lengths.search_skip)
            print(f"    {csv(split)}: {seen[split]:.1f} samples/s", flush=True)
    return max(seen, key=seen.__getitem__), seen


def breakdown(result: RunResult, skip: int) -> dict[str, float]:
    """Per-step medians (seconds): step, slowest compute, others' mean wait, the rest."""
    per_rank: list[dict[int, StepEvent]] = []
    for rank in range(result.start.world_size):
        with open(events_path(result.run_dir, rank), encoding="utf-8") as f:
            steps = [e for e in map(parse_event, f) if isinstance(e, StepEvent)]
        per_rank.append({e.step: e for e in steps if e.step > skip})
    common = sorted(set.intersection(*(set(r) for r in per_rank)))
    step_s, slowest, wait, rest = [], [], [], []
    for n in common:
        computes = [r[n].compute_s for r in per_rank]
        top = max(computes)
        step_s.append(per_rank[0][n].step_s)
        slowest.append(top)
        wait.append(statistics.mean(top - c for c in computes))
        rest.append(per_rank[0][n].step_s - top)
    return {"step": statistics.median(step_s), "compute": statistics.median(slowest),
            "wait": statistics.median(wait), "rest": statistics.median(rest)}


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
                extra=extra))
    return got


def report(args: argparse.Namespace, lengths: Lengths, oracle: Split,
           searched: dict[Split, float], got: dict[str, list[RunResult]]) -> None:
    skip = lengths.skip
    x = {name: [r.throughput(skip) for r in runs] for name, runs in got.items()}
    med = {name: statistics.median(v) for name, v in x.items()}
    solo_sum = sum(v for name, v in med.items() if name.startswith("solo"))
    print()
    print(f"Oracle: {len(args.slowdowns)} CPU ranks x 1 thread, slowdowns "
          f"{csv(args.slowdowns)}, simple_cnn, synthetic, B={args.global_batch}; allocator "
          f"{got['oracle'][0].start.allocator}; medians of {args.rounds} interleaved rounds "
          f"over steps {skip + 1}..{lengths.steps} (search: {args.search_rounds} round(s), "
          f"steps {lengths.search_skip + 1}..{lengths.search_steps})")
    print()
    print("Search (static splits, samples/s): " + "; ".join(
        f"{csv(s)} {v:.1f}" for s, v in sorted(searched.items(), key=lambda kv: -kv[1])))
    print()
    rows = []
    for name, runs in got.items():
        last = runs[-1]
        split = csv(last.start.split)
        if last.rebalances:
            split += f" → {csv(last.final_split)} ({len(last.rebalances)})"
        parts = breakdown(last, skip if lengths.steps > skip else 0)
        rows.append([name, split, f"{med[name]:.1f}", f"{min(x[name]):.0f}-{max(x[name]):.0f}",
                     f"{med[name] / med['oracle']:.3f}", f"{med[name] / med['equal']:.2f}",
                     *(f"{1000 * parts[k]:.1f}" for k in ("step", "compute", "wait", "rest"))])
    rows.append(["Σ solo (loose bound)", "-", f"{solo_sum:.1f}", "-",
                 f"{solo_sum / med['oracle']:.3f}", f"{solo_sum / med['equal']:.2f}",
                 "-", "-", "-", "-"])
    print(markdown_table(["run", "split (last round)", "samples/s", "rounds min-max",
                          "vs oracle", "vs equal", "step ms", "slowest compute ms",
                          "mean wait ms", "rest ms"], rows))
    dyn = med["dynamic"]
    print()
    print(f"oracle split {csv(oracle)}; oracle / Σ solo = {med['oracle'] / solo_sum:.3f}")
    for label, value, goal in (("dynamic / oracle", dyn / med["oracle"], GOAL_ORACLE),
                               ("dynamic / equal ", dyn / med["equal"], GOAL_EQUAL)):
        print(f"{label} = {value:.3f} (goal >= {goal}: {'met' if value >= goal else 'MISSED'})")
    print(f"proportional / oracle = {med['proportional'] / med['oracle']:.3f}")


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
    args = parser.parse_args(argv)
    args.slowdowns = SLOWDOWNS[args.ranks]
    lengths = Lengths(search_steps=args.search_steps, search_skip=args.search_skip,
                      steps=args.steps, skip=args.skip)
    with tempfile.TemporaryDirectory(prefix="corral-oracle-") as tmp:
        root = args.run_root or Path(tmp)
        print(f"oracle benchmark: slowdowns {csv(args.slowdowns)}, B={args.global_batch}, "
              f"allocator env {corral_env()}, runs in {root}", flush=True)
        oracle, searched = search(args, root, lengths)
        got = compare(args, root, oracle, lengths)
        report(args, lengths, oracle, searched, got)
    return 0


if __name__ == "__main__":
    run_main(main)
