"""A Hugging Face script on unequal ranks: examples/scripts/hf_trainer.py (with corral's opt-in)
on three ranks emulating devices 1x, 2x and 3x slow (the embedded cluster.toml's 1:2:3), its
global batch split by corral's dynamic policy against the even split plain torchrun gives it.
Both sides run the same script in the environment corral's launch gives a script
(``ScriptSettings``: the slowdowns are emulated by the opt-in, which plain torchrun cannot do),
the even side with the ``static`` policy and equal shares. Interleaved rounds, medians.

    python bench/hf_balance.py --rounds 5 --steps 60

Throughput is the Trainer's own ``train_samples_per_second`` (rank 0's summary line), which
includes the balancer's first steps at equal shares. Goal: balanced / even >= 1.70 (ideal
1.83: 1 + 1/2 + 1/3 over 3 x 1/3).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from _common import rounds_parser, run_main
from hf_script import throughput
from lm_data import tiny_model_and_pairs

from trainer.integrations.contract import ScriptSettings

SLOWDOWNS = (1.0, 2.0, 3.0)


def main() -> int:
    p = rounds_parser(__doc__)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8, help="per rank at an even split")
    p.add_argument("--rebalance-every", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-hf-balance-") as tmp:
        folder = Path(tmp)
        model, pairs = tiny_model_and_pairs(folder, count=4096)
        script_args = ["--model", str(model), "--data", str(pairs), "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size), "--cpu", "--save-steps", "100000"]
        rates: dict[str, list[float]] = {"balanced": [], "even": []}
        for round_ in range(args.rounds):
            order = ("balanced", "even") if round_ % 2 == 0 else ("even", "balanced")
            for side in order:  # alternate who goes first
                label = f"{side}-{round_}"
                settings = ScriptSettings(
                    run_dir=str(folder / f"run-{label}"), slowdown=SLOWDOWNS,
                    policy="dynamic" if side == "balanced" else "static",
                    rebalance_every=args.rebalance_every)
                rates[side].append(throughput(folder, label, script_args, len(SLOWDOWNS),
                                              args.threads, settings.to_env()))
                print(f"round {round_}: {label} {rates[side][-1]:.2f} samples/s", flush=True)
    balanced, even = statistics.median(rates["balanced"]), statistics.median(rates["even"])
    spread = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in rates.items()}
    print(f"median samples/s: balanced {balanced:.2f} ({spread['balanced']}), even {even:.2f} "
          f"({spread['even']}), ratio {balanced / even:.3f} ({args.rounds} rounds, "
          f"{args.steps} steps)")
    return 0


if __name__ == "__main__":
    run_main(main)
