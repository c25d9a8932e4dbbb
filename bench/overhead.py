"""Overhead benchmark: corral's trainer against a bare DDP loop (bench/ddp_baseline.py).

Homogeneous ranks on this machine (gloo, 1 thread each), the same model, data, global batch
and optimizer. The two alternate, round after round, so both see the same machine conditions;
each round's throughput is measured between the end of step ``--skip`` and the last step (start
up, warm-up and the final checkpoint are outside the clock). The result is the ratio of the
median throughputs, corral / bare DDP (target >= 0.98).

    python bench/overhead.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import bare_env, rounds_parser  # noqa: E402


def _launcher(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}"]


def run_baseline(args: argparse.Namespace) -> float:
    """Samples/s of the bare DDP loop."""
    cmd = [*_launcher(args.nproc), str(REPO / "bench" / "ddp_baseline.py"),
           "--model", args.model, "--samples", str(args.samples),
           "--global-batch", str(args.global_batch), "--steps", str(args.steps),
           "--skip", str(args.skip), "--threads", str(args.threads)]
    out = subprocess.run(cmd, cwd=REPO, env=bare_env(args.threads), capture_output=True, text=True,
                         check=True, timeout=600).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("{"))
    return float(json.loads(line)["samples_per_s"])


def run_corral(args: argparse.Namespace) -> float:
    """Samples/s of ``python -m trainer`` (static equal split), from rank 0's step events."""
    with tempfile.TemporaryDirectory(prefix="corral-overhead-") as run_dir:
        cmd = [*_launcher(args.nproc), "-m", "trainer", "--model", args.model,
               "--samples", str(args.samples), "--global-batch", str(args.global_batch),
               "--steps", str(args.steps), "--threads", str(args.threads),
               "--momentum", "0.9", "--run-dir", run_dir]  # as ddp_baseline.py's SGD
        subprocess.run(cmd, cwd=REPO, env=bare_env(args.threads), capture_output=True, text=True,
                       check=True, timeout=600)
        lines = (Path(run_dir) / "metrics" / "rank-0.jsonl").read_text().splitlines()
    t = {e["step"]: e["t"] for e in map(json.loads, lines) if e["event"] == "step"}
    return (args.steps - args.skip) * args.global_batch / (t[args.steps] - t[args.skip])


def main() -> None:
    p = rounds_parser(__doc__)
    p.add_argument("--model", default="simple_cnn")
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--global-batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--skip", type=int, default=10)
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()

    bare: list[float] = []
    corral: list[float] = []
    for i in range(args.rounds):
        # Alternate which goes first so a drifting machine favours neither.
        order = (run_baseline, run_corral) if i % 2 == 0 else (run_corral, run_baseline)
        for fn in order:
            (bare if fn is run_baseline else corral).append(fn(args))
        print(f"round {i + 1}: bare DDP {bare[-1]:.1f} samples/s, corral {corral[-1]:.1f} "
              "samples/s", flush=True)
    result = {
        "benchmark": "overhead", "nproc": args.nproc, "threads": args.threads,
        "model": args.model, "global_batch": args.global_batch,
        "steps_measured": args.steps - args.skip, "rounds": args.rounds,
        "bare_ddp_samples_per_s": bare, "corral_samples_per_s": corral,
        "ratio_of_medians": statistics.median(corral) / statistics.median(bare),
        "target": 0.98,
    }
    print(f"median bare DDP {statistics.median(bare):.1f} samples/s, corral "
          f"{statistics.median(corral):.1f} samples/s: ratio {result['ratio_of_medians']:.3f} "
          "(target >= 0.98)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
