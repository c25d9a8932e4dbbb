"""The Hugging Face opt-in's cost: examples/scripts/hf_trainer.py with corral's opt-in active
(``CORRAL_RUN_DIR`` set, equal shares) against the same script without it (the opt-in lines
then do nothing), equal ranks, interleaved rounds, medians.

    python bench/hf_script.py --rounds 5 --nproc 3 --steps 40

Throughput is the Trainer's own ``train_samples_per_second`` (rank 0's summary line), the same
measure on both sides. Goal: opt-in / plain >= 0.97.
"""

from __future__ import annotations

import ast
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, bare_env, rounds_parser, run_main
from lm_data import tiny_model_and_pairs

from trainer.integrations.contract import RUN_DIR_ENV

SUMMARY = re.compile(r"\{'train_runtime'.*\}")


def throughput(folder: Path, label: str, args: list[str], nproc: int, threads: int,
               corral: dict[str, str] | None) -> float:
    """One run of the example script, in ``corral``'s environment (``ScriptSettings.to_env``;
    None: as plain torchrun runs it); the Trainer's samples per second."""
    env = bare_env(threads)
    env.pop(RUN_DIR_ENV, None)
    env.update(corral or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", str(REPO / "examples" / "scripts" / "hf_trainer.py"),
           *args, "--out", str(folder / f"out-{label}")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    found = SUMMARY.findall(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"{label}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return float(ast.literal_eval(found[-1])["train_samples_per_second"])


def main() -> int:
    p = rounds_parser(__doc__)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=4, help="per rank")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-hf-bench-") as tmp:
        folder = Path(tmp)
        model, pairs = tiny_model_and_pairs(folder)
        script_args = ["--model", str(model), "--data", str(pairs), "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size), "--cpu", "--save-steps", "100000"]
        rates: dict[bool, list[float]] = {True: [], False: []}
        for round_ in range(args.rounds):
            for opt_in in (round_ % 2 == 0, round_ % 2 == 1):  # alternate who goes first
                label = f"{'opt-in' if opt_in else 'plain'}-{round_}"
                corral = {RUN_DIR_ENV: str(folder / f"run-{label}")} if opt_in else None
                rates[opt_in].append(throughput(folder, label, script_args, args.nproc,
                                                args.threads, corral))
                print(f"round {round_}: {label} {rates[opt_in][-1]:.2f} samples/s", flush=True)
    with_opt_in, plain = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"median samples/s: opt-in {with_opt_in:.2f}, plain {plain:.2f}, "
          f"ratio {with_opt_in / plain:.3f} ({args.rounds} rounds, {args.nproc} ranks, "
          f"{args.steps} steps)")
    return 0


if __name__ == "__main__":
    run_main(main)
