"""Reaction benchmark: how fast the dynamic policy follows a rank that slows down mid-run.

Two CPU ranks (one thread each) train simple_cnn on synthetic data with the dynamic policy,
both at full speed; from step ``--change-at`` on, rank 1 is emulated 2x slower
(``--slowdown-at STEP:1:2``). The new ideal is Σ of solo throughputs at slowdown 1 and 2 (one
process alone, same global batch B); the stricter bound is Σ of solo peaks over B, B/2 and B/4
(see bench/balance.py); both measured in the same invocation. Reported:

- steps from the change until throughput is back within 10 % of the new ideal, and of the
  bound (the median of the next ``WINDOW`` steps, so one lucky step does not count);
- the same against the run's own post-change steady state (median of its last 20 steps), which
  stays meaningful on a machine too busy to reach the ideal;
- rebalances after recovery, and reversals (a move of rank 1's share opposite to its previous
  move after the change; 0 means no oscillation). Target: recovery <= 30 steps without
  reversals.

    python bench/reaction.py [--quick] [--global-batch B] [--change-at STEP] [--run-root DIR]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RunResult, csv, markdown_table, run_main, run_trainer, solo_batches
from trainer.events import RebalanceEvent

WINDOW = 5
TARGET_STEPS = 30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--global-batch", type=int, default=384, help="B (see balance.py)")
    parser.add_argument("--change-at", type=int, help="first step run 2x slower on rank 1")
    parser.add_argument("--run-root", type=Path, help="keep run directories here")
    args = parser.parse_args(argv)
    solo_steps, steps, change = (20, 80, 35) if args.quick else (40, 120, 45)
    change = args.change_at or change
    B = args.global_batch

    with tempfile.TemporaryDirectory(prefix="corral-reaction-") as tmp:
        root = args.run_root or Path(tmp)
        print(f"reaction benchmark: B={B}, rank 1 slows 1 -> 2 at step {change}, runs in {root}")
        # Each slowdown's solo PEAK over batch sizes (see bench/balance.py: time per sample
        # depends on the batch, so one size alone would not bound the pair).
        solo = {
            (s, b): run_trainer(f"solo (slowdown {s:g}, b={b})", root / f"solo-{s:g}-{b}",
                                nproc=1, global_batch=b, steps=solo_steps, slowdown=[s])
            for s in (1.0, 2.0)
            for b in solo_batches(B)
        }  # fmt: skip
        run = run_trainer(
            "dynamic", root / "dynamic", nproc=2, global_batch=B, steps=steps,
            policy="dynamic", slowdown=(1.0, 1.0),
            extra=["--slowdown-at", f"{change}:1:2"],
        )  # fmt: skip

    skip = min(8, solo_steps // 3)
    # The ideal (Σ solo at the same B) and the stricter bound (Σ solo peaks over B,
    # B/2, B/4), as in bench/balance.py.
    at_b = {s: solo[(s, B)].throughput(skip) for s in (1.0, 2.0)}
    peak = {s: max(r.throughput(skip) for (f, _), r in solo.items() if f == s) for s in (1.0, 2.0)}
    ideal_after, bound_after = at_b[1.0] + at_b[2.0], peak[1.0] + peak[2.0]
    before = run.throughput(skip=10, last=change - 1)
    steady = statistics.median(_series(run)[-20:])
    to_ideal = _recovery(run, change, 0.9 * ideal_after)
    to_bound = _recovery(run, change, 0.9 * bound_after)
    to_steady = _recovery(run, change, 0.9 * steady)
    after = [e for e in run.rebalances if e.step >= change]
    settled = change + max(to_ideal or 0, to_steady or 0)
    late = [e for e in after if e.step > settled]
    reversals = _reversals(after)

    print()
    print(f"Reaction: 2 CPU ranks x 1 thread, simple_cnn, synthetic, B={B}, dynamic policy "
          f"(rebalance every 10); rank 1 slowdown 1 -> 2 at step {change}")  # fmt: skip
    print()
    rows = [
        ["throughput before the change (2 x solo at B / 2 x solo peak)",
         f"{before:.1f} ({2 * at_b[1.0]:.1f} / {2 * peak[1.0]:.1f})"],
        ["new ideal: solo x1 + solo x2 at B (the issue's)", f"{ideal_after:.1f}"],
        ["new bound: solo peak x1 + solo peak x2", f"{bound_after:.1f}"],
        ["steady state after the change (last 20 steps)",
         f"{steady:.1f} ({steady / ideal_after:.2f} of ideal, "
         f"{steady / bound_after:.2f} of bound)"],
        ["steps until within 10 % of the new ideal", _steps(to_ideal)],
        ["steps until within 10 % of the new bound", _steps(to_bound)],
        ["steps until within 10 % of the steady state", _steps(to_steady)],
        ["rebalances after the change (splits)",
         f"{len(after)} ({' -> '.join(csv(e.split) for e in after) or '-'})"],
        ["rebalances after recovery (ideal and steady state)", str(len(late))],
        ["reversals of rank 1's moves (oscillation)", str(reversals)],
    ]  # fmt: skip
    print(markdown_table(["measure", "value"], rows))
    print()
    recovered = to_ideal is not None and to_steady is not None
    met = recovered and max(to_ideal or 0, to_steady or 0) <= TARGET_STEPS and reversals == 0
    print(
        f"recovery {_steps(to_ideal)} steps to the ideal, {_steps(to_steady)} to the steady "
        f"state; {len(late)} rebalances after it, {reversals} reversals (target <= "
        f"{TARGET_STEPS} steps, no oscillation: {'met' if met else 'MISSED'})"
    )
    return 0


def _series(run: RunResult) -> list[float]:
    return [s.cluster_samples_per_s or 0.0 for s in run.steps]


def _recovery(run: RunResult, change: int, level: float) -> int | None:
    """Steps from ``change`` to the first step whose next ``WINDOW`` steps have a median of at
    least ``level`` (None: never)."""
    by_step = {s.step: s.cluster_samples_per_s or 0.0 for s in run.steps}
    last = max(by_step)
    for step in range(change, last - WINDOW + 2):
        if statistics.median(by_step[s] for s in range(step, step + WINDOW)) >= level:
            return step - change
    return None


def _reversals(events: list[RebalanceEvent]) -> int:
    """Moves of rank 1's share in the opposite direction to its previous move."""
    moves = [e.split[1] - e.previous[1] for e in events if e.split[1] != e.previous[1]]
    return sum(1 for a, b in itertools.pairwise(moves) if a * b < 0)


def _steps(value: int | None) -> str:
    return "not reached" if value is None else str(value)


if __name__ == "__main__":
    run_main(main)
