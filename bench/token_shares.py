"""Token- against count-balanced shares on variable-length data, and both against the oracle.

The causal_lm task (LoRA on the tiny generated model) on examples of 10 to 200 tokens without
packing, 3 ranks emulating speeds 1:2:3 (``--slowdown 6,3,2``: every rank emulated, so the
emulated time dominates the machine's own noise), the ``dynamic`` policy from the equal split:

- **tokens**: the split shares out each step's tokens (padded items: count x longest);
- **counts**: the same task without its items' token counts (``_count_shares_task.py``), so
  the split shares out item counts, as before;
- **oracle**: the best static split (of item counts) found by search: first every candidate
  around the proportional one once, then the best of them in the interleaved rounds.

Rounds interleave the three. Throughput: the steps' target tokens over their wall time
(rank 0's ``step_s``) after the first ``--skip`` steps; every configuration trains the same
global batches, so the ratios are ratios of mean step times. Goal: tokens / oracle >= 0.97.

    python bench/token_shares.py [--rounds 3] [--steps 24] [--skip 12] [--global-batch 96]
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
from pathlib import Path

from _common import REPO, markdown_table, rounds_parser, run_main, run_trainer, tiny_lm_files

from trainer.event_log import events_path
from trainer.events import StepEvent, parse_event

SLOWDOWNS = (6.0, 3.0, 2.0)
WORDS = ("red", "blue", "cat", "river", "seven", "stone", "quiet", "song")


def write_varlen(path: Path, count: int = 960, seed: int = 5) -> None:
    """``count`` texts of 10 to 200 byte tokens (with BOS and EOS)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for length in (rng.randint(10, 200) for _ in range(count)):
            text = ""
            while len(text) < length:
                text += rng.choice(WORDS) + " "
            f.write(json.dumps({"text": text[: length - 2]}) + "\n")


def tokens_per_s(run_dir: Path, skip: int) -> float:
    """Target tokens (every rank's) over rank 0's step wall time, steps after ``skip``."""
    units: dict[int, int] = {}
    seconds = 0.0
    for rank in range(len(SLOWDOWNS)):
        with open(events_path(run_dir, rank), encoding="utf-8") as f:
            for event in map(parse_event, f):
                if isinstance(event, StepEvent) and event.step > skip:
                    units[event.step] = units.get(event.step, 0) + (event.loss_units or 0)
                    seconds += event.step_s if rank == 0 else 0.0
    return sum(units.values()) / seconds


def candidates(global_batch: int) -> list[tuple[int, ...]]:
    """Static splits around the proportional one (1:2:3), and B/16 moved from the slowest rank
    to the middle one and from the middle one to the fastest (a per-step cost that does not
    grow with the batch makes the slower ranks' best share smaller than proportional)."""
    base = (global_batch // 6, global_batch // 3, global_batch - global_batch // 2)
    m = global_batch // 16
    return [base, (base[0] - m, base[1] + m, base[2]), (base[0], base[1] - m, base[2] + m)]


def main() -> int:
    p = rounds_parser(__doc__)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--skip", type=int, default=12, help="steps left out (the balancer settles)")
    p.add_argument("--global-batch", type=int, default=96)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-token-shares-") as tmp:
        folder = Path(tmp)
        from trainer.tiny_lm import write_tiny_lm

        model, _ = tiny_lm_files(folder)
        write_tiny_lm(model)
        data = folder / "varlen.jsonl"
        write_varlen(data)
        options = [f"model={model}", f"data={data}", "seq_len=256", "lora_r=4", "lora_alpha=8",
                   "packing=false", "samples=0"]
        common = ["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9"]
        for option in options:
            common += ["--task-option", option]
        equal = ",".join([str(args.global_batch // 3)] * 3)
        configs = {
            "tokens": (["--task", "causal_lm", *common], "dynamic", equal),
            "counts": (["--task", str(REPO / "bench" / "_count_shares_task.py"), *common],
                       "dynamic", equal),
        }
        runs = 0

        def measure(label: str, task: list[str], policy: str, split: str) -> float:
            nonlocal runs
            runs += 1
            run_dir = folder / f"run-{runs}"
            run_trainer(label, run_dir, nproc=3, global_batch=args.global_batch,
                        steps=args.steps, policy=policy, slowdown=SLOWDOWNS, task=task,
                        extra=["--split", split, "--rebalance-every", "5"])
            return tokens_per_s(run_dir, args.skip)

        print("search: static splits of item counts, one run each", flush=True)
        static_task = configs["counts"][0]
        searched = {split: measure(f"static {split}", static_task, "static",
                                   ",".join(map(str, split)))
                    for split in candidates(args.global_batch)}
        best = max(searched, key=lambda s: searched[s])
        configs["oracle"] = (static_task, "static", ",".join(map(str, best)))
        results: dict[str, list[float]] = {name: [] for name in configs}
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds}", flush=True)
            for name, (task, policy, split) in configs.items():
                results[name].append(measure(name, task, policy, split))
    print("\nsearch (tokens/s, one run each):")
    print(markdown_table(["static split", "tokens/s"],
                         [[",".join(map(str, s)), f"{v:.0f}"] for s, v in searched.items()]))
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"\noracle split {','.join(map(str, best))}; medians of {args.rounds} rounds:")
    rows = [[name, f"{medians[name]:.0f}", " / ".join(f"{v:.0f}" for v in results[name]),
             f"{medians[name] / medians['oracle']:.3f}", f"{medians[name] / medians['counts']:.3f}"]
            for name in ("tokens", "counts", "oracle")]
    print(markdown_table(["split by", "tokens/s", "rounds", "/ oracle", "/ counts"], rows))
    return 0


if __name__ == "__main__":
    run_main(main)
