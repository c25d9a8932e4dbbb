"""Reaction benchmark: how fast the dynamic policy follows a rank that slows down mid-run.

Two CPU ranks (one thread each) train simple_cnn on synthetic data with the dynamic policy,
both at full speed; from step ``--change-at`` on, rank 1 is emulated 2x slower
(``--slowdown-at STEP:1:2``). The new ideal is Σ of solo throughputs at slowdown 1 and 2 (one
process alone, same global batch B); the stricter bound is Σ of solo peaks over B, B/2 and B/4
(see bench/balance.py); both measured in the same invocation. Reported:

- steps from the change until throughput is back within 10 % of the new oracle (the best
  static split for the new speeds, searched in the same invocation by bench/oracle.py's search,
  ``--oracle-rounds``), of the new ideal, and of the bound (the median of the next ``WINDOW``
  steps, so one lucky step does not count);
- the same against the run's own post-change steady state (median of its last 20 steps), which
  stays meaningful on a machine too busy to reach the ideal;
- rebalances after the change and reversals (a move of rank 1's share opposite to its
  previous move after the change), split by cause: a reversal whose decision notes a measured
  speed change (a rank's time at an unchanged share moved by more than the change tolerance,
  20 % or three standard errors) follows the machine; any
  other reversal is the balancer crossing the balance point (oscillation);
- the machine's own drift: how far one rank's median compute time moves between consecutive
  10-step windows at an unchanged share after the change (0 on a perfectly steady machine).

``--repeats`` runs the dynamic pair several times (solo runs once) and reports each run and the
medians. Target: recovery <= 30 steps and no reversal by the balancer itself.

    python bench/reaction.py [--quick] [--repeats N] [--global-batch B] [--change-at STEP]
                             [--run-root DIR] [--baseline DIR]

``--baseline DIR`` runs the same dynamic pairs with another checkout's trainer, interleaved,
for a before/after comparison (e.g. ``git worktree add /tmp/old COMMIT``).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
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
from trainer.event_log import events_path
from trainer.events import StepEvent, parse_event

WINDOW = 5
TARGET_STEPS = 30
DRIFT_WINDOW = 10


@dataclass(frozen=True)
class Reaction:
    """What one dynamic run did after the change."""

    to_ideal: int | None
    to_bound: int | None
    to_steady: int | None
    to_oracle: int | None
    """Steps to within 10 % of the new oracle (None: not reached, or no oracle searched)."""
    steady: float
    splits: list[str]
    reversals: int
    machine_reversals: int
    drift: list[float]

    @property
    def balancer_reversals(self) -> int:
        return self.reversals - self.machine_reversals


@dataclass(frozen=True)
class Yardsticks:
    """Each slowdown's solo throughput at B and its solo peak over B, B/2 and B/4."""

    at_b: dict[float, float]
    peak: dict[float, float]

    @property
    def ideal(self) -> float:
        """The issue's new ideal: Σ of the solo throughputs at B after the change."""
        return self.at_b[1.0] + self.at_b[2.0]

    @property
    def bound(self) -> float:
        """The stricter new bound: Σ of the solo peaks after the change."""
        return self.peak[1.0] + self.peak[2.0]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    baseline = baseline_tree(parser, args.baseline)
    solo_steps, steps, change = (20, 80, 35) if args.quick else (40, 120, 45)
    change = args.change_at or change
    B = args.global_batch
    trees = {"this tree": REPO}
    if baseline is not None:
        trees["baseline"] = baseline

    with tempfile.TemporaryDirectory(prefix="corral-reaction-") as tmp:
        root = args.run_root or Path(tmp)
        print(f"reaction benchmark: B={B}, rank 1 slows 1 -> 2 at step {change}, "
              f"{args.repeats} dynamic run(s) per trainer, runs in {root}")  # fmt: skip
        solo = _solo_runs(root, B, solo_steps)
        oracle = _oracle(args, root) if args.oracle_rounds > 0 else None
        runs = _dynamic_runs(args, root, trees, steps, change)
        # Measured while the run directories are still there: a reaction reads the ranks'
        # events files (the machine's drift).
        yardsticks = _yardsticks(solo, B, skip=min(8, solo_steps // 3))
        before = statistics.median(
            r.throughput(skip=10, last=change - 1) for r in runs["this tree"]
        )
        results = {
            name: [_reaction(r, change, yardsticks.ideal, yardsticks.bound, oracle) for r in rs]
            for name, rs in runs.items()
        }
    _report(args, change, before, yardsticks, oracle, results)
    return 0


def _parser() -> argparse.ArgumentParser:
    """The command line's flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="dynamic runs (default 3)")
    parser.add_argument("--global-batch", type=int, default=384, help="B (see balance.py)")
    parser.add_argument("--change-at", type=int, help="first step run 2x slower on rank 1")
    parser.add_argument("--run-root", type=Path, help="keep run directories here")
    parser.add_argument(
        "--baseline", type=Path, metavar="DIR",
        help=BASELINE_HELP + "runs the same dynamic pairs, interleaved with this tree's",
    )  # fmt: skip
    parser.add_argument(
        "--oracle-rounds", type=int, default=1,
        help="rounds of bench/oracle.py's split search for the new speeds (1 and 2) in this "
        "invocation, the yardstick for 'steps to oracle' (0: no search)",
    )  # fmt: skip
    return parser


def _solo_runs(root: Path, B: int, solo_steps: int) -> dict[tuple[float, int], RunResult]:
    """One process alone at each slowdown (1 and 2) and each batch size of ``solo_batches``."""
    # Each slowdown's solo PEAK over batch sizes (see bench/balance.py: time per sample
    # depends on the batch, so one size alone would not bound the pair).
    return {
        (s, b): run_trainer(f"solo (slowdown {s:g}, b={b})", root / f"solo-{s:g}-{b}",
                            nproc=1, global_batch=b, steps=solo_steps, slowdown=[s])
        for s in (1.0, 2.0)
        for b in solo_batches(B)
    }  # fmt: skip


def _dynamic_runs(args: argparse.Namespace, root: Path, trees: dict[str, Path], steps: int,
                  change: int) -> dict[str, list[RunResult]]:
    """``--repeats`` dynamic pairs per trainer tree, rank 1 2x slower from step ``change``."""
    runs: dict[str, list[RunResult]] = {name: [] for name in trees}
    for i in range(args.repeats):  # interleaved, so a drifting machine affects both alike
        for name, tree in trees.items():
            tag = "dynamic" if name == "this tree" else "baseline"
            runs[name].append(run_trainer(
                f"{tag} #{i + 1}", root / f"{tag}-{i + 1}", nproc=2, global_batch=args.global_batch,
                steps=steps, policy="dynamic", slowdown=(1.0, 1.0),
                extra=["--slowdown-at", f"{change}:1:2"], tree=tree,
            ))  # fmt: skip
    return runs


def _yardsticks(solo: dict[tuple[float, int], RunResult], B: int, skip: int) -> Yardsticks:
    """The solo throughputs the pair is measured against after the change."""
    # The ideal (Σ solo at the same B) and the stricter bound (Σ solo peaks over B,
    # B/2, B/4), as in bench/balance.py.
    at_b = {s: solo[(s, B)].throughput(skip) for s in (1.0, 2.0)}
    peak = {
        s: max(r.throughput(skip) for (f, _), r in solo.items() if f == s) for s in (1.0, 2.0)
    }
    return Yardsticks(at_b, peak)


def _report(args: argparse.Namespace, change: int, before: float, yardsticks: Yardsticks,
            oracle: tuple[tuple[int, ...], float] | None,
            results: dict[str, list[Reaction]]) -> None:
    """The set-up and yardsticks, a table row per dynamic run, a summary line per tree."""
    B, ideal, bound = args.global_batch, yardsticks.ideal, yardsticks.bound
    at_b, peak = yardsticks.at_b, yardsticks.peak
    print()
    print(f"Reaction: 2 CPU ranks x 1 thread, simple_cnn, synthetic, B={B}, dynamic policy "
          f"(rebalance every 10); rank 1 slowdown 1 -> 2 at step {change}")  # fmt: skip
    print()
    print(
        f"before the change (median of runs): {before:.1f} samples/s "
        f"(2 x solo at B {2 * at_b[1.0]:.1f}, 2 x solo peak {2 * peak[1.0]:.1f}); "
        f"new ideal (solo x1 + solo x2 at B) {ideal:.1f}; new bound (solo peaks) {bound:.1f}"
        + (f"; new oracle (best static split for slowdowns 1, 2: {csv(oracle[0])}) "
           f"{oracle[1]:.1f}" if oracle else "")
    )
    print()
    rows = [
        [f"{name} #{i + 1}", _steps(r.to_oracle), _steps(r.to_ideal), _steps(r.to_bound),
         _steps(r.to_steady),
         f"{r.steady:.1f} ({r.steady / ideal:.2f} / {r.steady / bound:.2f})",
         f"{len(r.splits)} ({' -> '.join(r.splits) or '-'})",
         f"{r.reversals} ({r.machine_reversals} / {r.balancer_reversals})",
         _drift_text(r.drift)]
        for i in range(args.repeats)
        for name, rs in results.items()
        for r in [rs[i]]
    ]  # fmt: skip
    header = ["run", "steps to oracle", "steps to ideal", "steps to bound", "steps to steady",
              "steady samples/s "
              "(of ideal / bound)", "rebalances after the change", "reversals (machine / "
              "balancer)", "machine drift, median / max"]  # fmt: skip
    print(markdown_table(header, rows))
    print()
    for name, rs in results.items():
        print(f"{name}: {_summary(rs)}")


def _summary(results: list[Reaction]) -> str:
    """One line: recovery, rebalances and reversals over the runs, and whether the target holds."""
    worst = [max(r.to_ideal, r.to_steady) if r.to_ideal is not None and r.to_steady is not None
             else None for r in results]  # fmt: skip
    recovered = [w for w in worst if w is not None]
    balancer_reversals = sum(r.balancer_reversals for r in results)
    met = len(recovered) == len(results) and max(recovered) <= TARGET_STEPS
    to_oracle = [r.to_oracle for r in results]
    oracle_met = None not in to_oracle and max(t or 0 for t in to_oracle) <= TARGET_STEPS
    oracle = ("" if all(r.to_oracle is None for r in results) and not oracle_met else
              f"to within 10 % of the new oracle: {', '.join(_steps(t) for t in to_oracle)} "
              f"steps (target <= {TARGET_STEPS}: {'met' if oracle_met else 'MISSED'}); ")
    return (
        oracle +
        f"recovery (ideal and steady state), median {_median(recovered)} steps, worst "
        f"{_steps(max(recovered) if recovered else None)}; rebalances after the change, median "
        f"{statistics.median(len(r.splits) for r in results):g}; steady state, median "
        f"{statistics.median(r.steady for r in results):.1f} samples/s; reversals "
        f"{sum(r.reversals for r in results)} in {len(results)} runs, "
        f"{sum(r.machine_reversals for r in results)} after a measured speed change, "
        f"{balancer_reversals} by the balancer (target <= {TARGET_STEPS} steps, no balancer "
        f"reversal: {'met' if met and balancer_reversals == 0 else 'MISSED'})"
    )


def _oracle(args: argparse.Namespace, root: Path) -> tuple[tuple[int, ...], float]:
    """The best static split for the speeds after the change, and its samples/s."""
    from bench.oracle import Lengths, search

    lengths = Lengths(search_steps=50, search_skip=15, steps=0, skip=0)
    setting = argparse.Namespace(global_batch=args.global_batch, slowdowns=(1.0, 2.0),
                                 search_rounds=args.oracle_rounds, task_flags=[])
    best, seen = search(setting, root, lengths)
    return best, seen[best]


def _reaction(run: RunResult, change: int, ideal: float, bound: float,
              oracle: tuple[tuple[int, ...], float] | None) -> Reaction:
    steady = statistics.median(_series(run)[-20:])
    after = [e for e in run.rebalances if e.step > change]
    moves = [(e.split[1] - e.previous[1], e) for e in after if e.split[1] != e.previous[1]]
    reversing = [e for (a, _), (b, e) in itertools.pairwise(moves) if a * b < 0]
    return Reaction(
        to_ideal=_recovery(run, change, 0.9 * ideal),
        to_bound=_recovery(run, change, 0.9 * bound),
        to_steady=_recovery(run, change, 0.9 * steady),
        to_oracle=_recovery(run, change, 0.9 * oracle[1]) if oracle else None,
        steady=steady,
        splits=[csv(e.split) for e in after],
        reversals=len(reversing),
        machine_reversals=sum(1 for e in reversing if "changed speed" in e.reason),
        drift=_drift(run, change),
    )


def _drift(run: RunResult, change: int) -> list[float]:
    """|ratio − 1| of one rank's median compute time between consecutive ``DRIFT_WINDOW``-step
    windows (the balancer's own windows: steps 10k+1 .. 10k+10) that both run the same local
    batch, from the first window wholly after the change on."""
    out = []
    for rank in range(run.start.world_size):
        windows: dict[int, list[StepEvent]] = {}
        with open(events_path(run.run_dir, rank), encoding="utf-8") as f:
            for e in map(parse_event, f):
                if isinstance(e, StepEvent) and e.step > change:
                    windows.setdefault((e.step - 1) // DRIFT_WINDOW, []).append(e)
        medians = {
            k: (chunk[0].local_batch, statistics.median(e.compute_s for e in chunk))
            for k, chunk in windows.items()
            if len(chunk) == DRIFT_WINDOW and len({e.local_batch for e in chunk}) == 1
        }
        out += [abs(medians[k + 1][1] / t - 1) for k, (b, t) in medians.items()
                if k + 1 in medians and medians[k + 1][0] == b and t > 0]  # fmt: skip
    return out


def _drift_text(drift: list[float]) -> str:
    if not drift:
        return "-"
    return f"{100 * statistics.median(drift):.0f} % / {100 * max(drift):.0f} %"


def _median(values: list[int]) -> str:
    return f"{statistics.median(values):g}" if values else "not reached"


def _series(run: RunResult) -> list[float]:
    return run.step_rates()


def _recovery(run: RunResult, change: int, level: float) -> int | None:
    """Steps from ``change`` to the first step whose next ``WINDOW`` steps have a median of at
    least ``level`` (None: never)."""
    by_step = {s.step: rate for s, rate in zip(run.steps, run.step_rates(), strict=True)}
    last = max(by_step)
    for step in range(change, last - WINDOW + 2):
        if statistics.median(by_step[s] for s in range(step, step + WINDOW)) >= level:
            return step - change
    return None


def _steps(value: int | None) -> str:
    return "not reached" if value is None else str(value)


if __name__ == "__main__":
    run_main(main)
