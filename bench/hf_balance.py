"""A Hugging Face script on unequal ranks: examples/scripts/hf_trainer.py (with corral's opt-in)
on three ranks emulating devices 1x, 2x and 3x slow (the embedded cluster.toml's 1:2:3), its
global batch split by corral's dynamic policy, against the best static split for this script
found by search (the "oracle": bench/oracle.py's search, run on this script), and the even
split plain torchrun gives it for reference. Every side runs the same script in the
environment corral's launch gives a script (``ScriptSettings``: the slowdowns are emulated by
the opt-in, which plain torchrun cannot do); the oracle and even sides with the ``static``
policy and their split. Search first (each candidate once per ``--search-rounds``), then
interleaved comparison rounds (the order rotating), medians.

    python bench/hf_balance.py --rounds 5 --steps 60 --search-steps 40 --skip 20

Throughput is measured between the end of step ``--skip`` and the last step, from rank 0's step
events (global batch over each step's ``step_s``), as bench/oracle.py measures corral's own
loop: start-up and the balancer's first steps at equal shares are outside the clock. With
``--skip 0`` it is the Trainer's own ``train_samples_per_second`` (the whole run). The ideal
1.83x over even (1 + 1/2 + 1/3 over 3 x 1/3) ignores the fixed per-step cost; the yardstick
is the oracle. Goal: dynamic / oracle >= 0.97.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import csv, read_run, rounds_parser, run_main
from hf_script import throughput
from lm_data import tiny_model_and_pairs
from oracle import Split, search_best

from trainer.balance.solve import equal_split
from trainer.integrations.contract import ScriptSettings
from trainer.run_layout import RunLayout

SLOWDOWNS = (1.0, 2.0, 3.0)
GOAL_ORACLE = 0.97
SIDES = ("dynamic", "oracle", "even")
"""The comparison's sides: corral's dynamic policy, the searched static split, equal shares."""

Runner = Callable[[str, str, Split | None, int], float]
"""One run of the script: (label, policy, static split or None, steps) -> samples/s."""


def script_runner(folder: Path, model: Path, pairs: Path, batch_size: int, threads: int,
                  rebalance_every: int, skip: int) -> Runner:
    """Runs of the example script on ``len(SLOWDOWNS)`` emulated ranks in ``folder``."""
    def run(label: str, policy: str, split: Split | None, steps: int) -> float:
        script_args = ["--model", str(model), "--data", str(pairs), "--steps", str(steps),
                       "--batch-size", str(batch_size), "--cpu", "--save-steps", "100000"]
        settings = ScriptSettings(run_dir=str(folder / f"run-{label}"), slowdown=SLOWDOWNS,
                                  policy="dynamic" if policy == "dynamic" else "static",
                                  split=split, rebalance_every=rebalance_every)
        rate = throughput(folder, label, script_args, len(SLOWDOWNS), threads,
                          settings.to_env())
        if skip:
            rate = steady_rate(Path(settings.run_dir), skip, batch_size * len(SLOWDOWNS))
        moves = splits_taken(Path(settings.run_dir)) if policy == "dynamic" else ""
        print(f"    {label}: {rate:.2f} samples/s{moves}", flush=True)
        return rate
    return run


def steady_rate(run_dir: Path, skip: int, global_batch: int) -> float:
    """Samples/s over rank 0's steps after ``skip``: the global batch over each step's
    ``step_s`` (measured by the opt-in's step reporter)."""
    timed = [step.step_s for step in read_run("script", run_dir).steps if step.step > skip]
    if not timed:
        raise RuntimeError(f"{run_dir}: no step after step {skip} (--skip below --steps)")
    return global_batch * len(timed) / sum(timed)


def splits_taken(run_dir: Path) -> str:
    """`` (splits 8,8,8 →@6 12,7,5 …)``: a dynamic run's moves, from rank 0's events."""
    if not (run_dir / RunLayout.METRICS / "rank-0.jsonl").is_file():
        return ""
    moves = read_run("script", run_dir).rebalances
    if not moves:
        return " (no move)"
    return f" (splits {csv(moves[0].previous)}" + "".join(
        f" →@{move.step} {csv(move.split)}" for move in moves) + ")"


def oracle_split(run: Runner, global_batch: int, rounds: int, steps: int
                 ) -> tuple[Split, dict[Split, float]]:
    """The best static split of the script, by bench/oracle.py's search (medians of
    ``rounds`` runs per candidate, candidates interleaved)."""
    def rates(todo: list[Split], tag: str) -> dict[Split, float]:
        got: dict[Split, list[float]] = {split: [] for split in todo}
        for round_ in range(rounds):
            shift = round_ % len(todo)
            for split in todo[shift:] + todo[:shift]:
                label = f"{tag}-{'_'.join(map(str, split))}-{round_}"
                got[split].append(run(label, "static", split, steps))
        return {split: statistics.median(values) for split, values in got.items()}

    return search_best(SLOWDOWNS, global_batch, rates)


def compare(run: Runner, oracle: Split, global_batch: int, rounds: int, steps: int
            ) -> dict[str, list[float]]:
    """Dynamic (from equal shares), the oracle split and the even split, interleaved."""
    splits: dict[str, Split | None] = {"dynamic": None, "oracle": oracle,
                                       "even": equal_split(global_batch, len(SLOWDOWNS))}
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    for round_ in range(rounds):
        shift = round_ % len(SIDES)
        for side in SIDES[shift:] + SIDES[:shift]:  # rotate who goes first
            policy = "dynamic" if side == "dynamic" else "static"
            rates[side].append(run(f"{side}-{round_}", policy, splits[side], steps))
    return rates


def main() -> int:
    p = rounds_parser(__doc__)
    p.add_argument("--steps", type=int, default=60, help="steps of a comparison run")
    p.add_argument("--search-steps", type=int, default=40, help="steps of a search run")
    p.add_argument("--search-rounds", type=int, default=1, help="runs per search candidate")
    p.add_argument("--batch-size", type=int, default=8, help="per rank at an even split")
    p.add_argument("--rebalance-every", type=int, default=5)
    p.add_argument("--skip", type=int, default=20,
                   help="steps left out of the measurement (0: the Trainer's whole-run figure)")
    args = p.parse_args()
    global_batch = args.batch_size * len(SLOWDOWNS)
    with tempfile.TemporaryDirectory(prefix="corral-hf-balance-") as tmp:
        folder = Path(tmp)
        model, pairs = tiny_model_and_pairs(folder, count=4096)
        run = script_runner(folder, model, pairs, args.batch_size, args.threads,
                            args.rebalance_every, args.skip)
        oracle, searched = oracle_split(run, global_batch, args.search_rounds,
                                        args.search_steps)
        print(f"oracle split {csv(oracle)}; search: " + "; ".join(
            f"{csv(s)} {v:.2f}" for s, v in sorted(searched.items(), key=lambda kv: -kv[1])),
            flush=True)
        rates = compare(run, oracle, global_batch, args.rounds, args.steps)
    median = {side: statistics.median(values) for side, values in rates.items()}
    spread = {side: f"{min(v):.2f}-{max(v):.2f}" for side, v in rates.items()}
    print("median samples/s: " + ", ".join(f"{side} {median[side]:.2f} ({spread[side]})"
                                           for side in SIDES)
          + f" ({args.rounds} rounds, {args.steps} steps, steps {args.skip + 1}.. timed, "
            f"global batch {global_batch})")
    ratio = median["dynamic"] / median["oracle"]
    print(f"dynamic / oracle = {ratio:.3f} (goal >= {GOAL_ORACLE}: "
          f"{'met' if ratio >= GOAL_ORACLE else 'MISSED'}); dynamic / even = "
          f"{median['dynamic'] / median['even']:.3f}; oracle / even = "
          f"{median['oracle'] / median['even']:.3f}")
    return 0


if __name__ == "__main__":
    run_main(main)
