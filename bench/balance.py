"""Balance benchmark: how close each policy gets to the ideal on unequal ranks.

Two CPU ranks (one thread each) train simple_cnn on synthetic data; rank 1 is emulated 3x
slower (``--slowdown 1,3``). In one invocation it measures, side by side:

- the ideal (the issue's definition): Σ of each rank's solo throughput (one process alone at
  its slowdown) at the same global batch B;
- a stricter bound: Σ of each rank's solo PEAK over B, B/2 and B/4. Time per sample depends on
  the batch (a fixed cost per step, CPU caches), so a rank with a smaller share in the pair can
  beat its solo rate at B; the peak sum bounds any split from above;
- ``static`` (equal split), ``proportional`` (warm-up capacities) and ``dynamic``.

The default B=384 keeps compute dominant (about 0.3 s per step on one core).

Throughput is the median of the per-step throughput (global batch / rank 0's ``step_s``)
after the warm-up steps; "compute max/min" is the ratio of the slowest to the fastest rank's median
forward+backward time (1.00: the split balances compute perfectly). Targets: dynamic
>= 0.90 x ideal and >= 1.6 x static.

    python bench/balance.py [--quick] [--rounds N] [--global-batch B] [--run-root DIR]
                            [--baseline DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    BASELINE_HELP,
    REPO,
    RunResult,
    baseline_tree,
    csv,
    markdown_table,
    run_main,
    run_trainer,
    solo_batches,
)
from trainer.settings.run_settings import POLICIES

SLOWDOWN = (1.0, 3.0)
TARGET_IDEAL = 0.90
TARGET_STATIC = 1.6


@dataclass(frozen=True)
class RunLengths:
    """Steps per run, and the warm-up steps left out of the medians."""

    solo: int
    pair: int
    skip: int

    @property
    def solo_skip(self) -> int:
        """The warm-up steps left out of a solo run's median (it has fewer steps)."""
        return min(self.skip, self.solo // 3)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    baseline = baseline_tree(parser, args.baseline)
    pairs = [(policy, policy, REPO) for policy in POLICIES]
    if baseline is not None:
        pairs.append(("dynamic (baseline)", "dynamic", baseline))
    lengths = RunLengths(20, 40, 8) if args.quick else RunLengths(40, 80, 15)

    with tempfile.TemporaryDirectory(prefix="corral-balance-") as tmp:
        root = args.run_root or Path(tmp)
        print(f"balance benchmark: B={args.global_batch}, slowdown {csv(SLOWDOWN)}, "
              f"runs in {root}")
        results = _run_rounds(args, root, pairs, lengths)
        # Reported while the run directories are still there: the compute spread reads every
        # rank's events file.
        _report(args, results, [label for label, _, _ in pairs], lengths)
    return 0


def _parser() -> argparse.ArgumentParser:
    """The command line's flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument(
        "--global-batch", type=int, default=384,
        help="B: large, so compute dominates, but where time per sample is still constant",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="run the whole set this many times, interleaved, and report medians",
    )  # fmt: skip
    parser.add_argument("--run-root", type=Path, help="keep run directories here")
    parser.add_argument(
        "--baseline", type=Path, metavar="DIR",
        help=BASELINE_HELP + "also runs the dynamic pair in every round ('dynamic (baseline)')",
    )  # fmt: skip
    return parser


def _run_rounds(args: argparse.Namespace, root: Path, pairs: list[tuple[str, str, Path]],
                lengths: RunLengths) -> dict[str, list[RunResult]]:
    """Every round's solo runs (each rank's slowdown alone, at each batch size of
    ``solo_batches``) and pairs (each policy, the baseline's dynamic too), by label."""
    B = args.global_batch
    results: dict[str, list[RunResult]] = {}
    for n in range(args.rounds):
        for r, s in enumerate(SLOWDOWN):
            for b in solo_batches(B):
                label = f"solo rank {r} (slowdown {s:g}) b={b}"
                results.setdefault(label, []).append(
                    run_trainer(label, root / f"{n}-solo-{r}-{b}", nproc=1, global_batch=b,
                                steps=lengths.solo, slowdown=[s])
                )  # fmt: skip
        for label, policy, tree in pairs:
            results.setdefault(label, []).append(
                run_trainer(label, root / f"{n}-{label.replace(' ', '-')}", nproc=2,
                            global_batch=B, steps=lengths.pair, policy=policy,
                            slowdown=SLOWDOWN, tree=tree)
            )  # fmt: skip
    return results


def _report(args: argparse.Namespace, results: dict[str, list[RunResult]], policies: list[str],
            lengths: RunLengths) -> None:
    """The table (each solo run, the two ideals, each policy) and the targets' verdicts."""
    B, skip = args.global_batch, lengths.skip

    def x(label: str) -> float:
        k = lengths.solo_skip if label.startswith("solo") else skip
        return statistics.median(r.throughput(k) for r in results[label])

    solo_labels = [label for label in results if label.startswith("solo")]
    # Two ideals. The issue's: Σ of each rank's solo throughput at the same global batch B.
    # The stricter bound: Σ of each rank's solo PEAK over B, B/2, B/4 — time per sample
    # depends on the batch (a fixed cost per step, CPU caches), so a rank given a smaller
    # share in the pair may run faster per sample than it does alone at B.
    at_b = sum(x(label) for label in solo_labels if label.endswith(f" b={B}"))
    peaks = sum(
        max(x(label) for label in solo_labels if label.startswith(f"solo rank {r} "))
        for r in range(len(SLOWDOWN))
    )
    static_x = x("static")
    rows: list[list[object]] = [
        [label, csv(results[label][-1].start.split), "-", "-", f"{x(label):.1f}", "-", "-",
         "-"]
        for label in solo_labels
    ]  # fmt: skip
    rows.append(["ideal (Σ solo at B)", "-", "-", "-", f"{at_b:.1f}", "1.00",
                 f"{at_b / peaks:.2f}", f"{at_b / static_x:.2f}"])  # fmt: skip
    rows.append(["bound (Σ solo peaks)", "-", "-", "-", f"{peaks:.1f}",
                 f"{peaks / at_b:.2f}", "1.00", f"{peaks / static_x:.2f}"])  # fmt: skip
    for policy in policies:
        last = results[policy][-1]
        spread = statistics.median(r.compute_spread(skip) for r in results[policy])
        rows.append([policy, csv(last.start.split), _final(last), f"{spread:.2f}",
                     f"{x(policy):.1f}", f"{x(policy) / at_b:.2f}",
                     f"{x(policy) / peaks:.2f}", f"{x(policy) / static_x:.2f}"])  # fmt: skip
    print()
    rounds = f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else ""
    print(f"Balance: 2 CPU ranks x 1 thread, slowdown {csv(SLOWDOWN)}, simple_cnn, synthetic, "
          f"B={B}; median samples/s over steps {skip + 1}..{lengths.pair} "
          f"(solo: {lengths.solo_skip + 1}..{lengths.solo}){rounds}")  # fmt: skip
    print()
    header = ["run", "first split", "final split (rebalances)", "compute max/min",
              "samples/s", "vs ideal", "vs Σ peaks", "vs static"]  # fmt: skip
    print(markdown_table(header, rows))
    _verdicts(args, x, at_b, peaks, static_x)


def _verdicts(args: argparse.Namespace, x: Callable[[str], float], at_b: float, peaks: float,
              static_x: float) -> None:
    """dynamic against the baseline's dynamic, the ideal, the bound and static; the targets."""
    if args.baseline is not None:
        base = x("dynamic (baseline)")
        print()
        print(f"dynamic / dynamic (baseline) = {x('dynamic') / base:.3f}")
    dyn = x("dynamic")
    ok_ideal, ok_static = dyn / at_b >= TARGET_IDEAL, dyn / static_x >= TARGET_STATIC
    print()
    print(f"dynamic / ideal (Σ solo at B) = {dyn / at_b:.3f} (target >= {TARGET_IDEAL}: "
          f"{'met' if ok_ideal else 'MISSED'})")  # fmt: skip
    print(f"dynamic / Σ solo peaks        = {dyn / peaks:.3f} (stricter bound, no target)")
    print(f"dynamic / static              = {dyn / static_x:.3f} (target >= {TARGET_STATIC}: "
          f"{'met' if ok_static else 'MISSED'})")  # fmt: skip


def _final(result: RunResult) -> str:
    return f"{csv(result.final_split)} ({len(result.rebalances)})"


if __name__ == "__main__":
    run_main(main)
