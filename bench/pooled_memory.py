"""Pooled memory, side by side in one run, on three CPU "hosts" of this machine, each rank in a
memory cgroup of its own capped 1:2:4 (bench/_memory_caps.py; root, cgroup v1 or v2):

(a) the largest model (parameters) each ``shard_state`` trains: an MLP of square ``--width``
    layers, the layer counts of ``--ladder`` tried in order until one is OOM-killed;
(b) step time sharded ÷ replicated at a size both fit (rank 0's median step, the first left
    out), ``--steps`` steps;
(c) each rank's peak memory (its cgroup's peak charge) against its budget (its cgroup's room
    as the rank measured it) and its cap.

The ranks run corral's optimizer step (trainer/step/optim.py, AdamW) through
``bench/_capped_rank.py``: sharded, the owners' reduces and broadcasts; replicated, one
all-reduce of the flat gradient after the backward (DDP's arithmetic without its overlap).

    sudo .venv/bin/python bench/pooled_memory.py --small-gib 1 --width 2048
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._memory_caps import MemoryCap, run_ranks, why_not

GIB = 1 << 30
SPLIT = [4, 8, 16]
"""Rows per rank, proportional to the hosts' caps."""
RUN_S = 900.0


def run(mode: str, width: int, layers: int, steps: int, small: float) -> dict[str, Any]:
    """One run of the three capped ranks: whether it ended, each rank's result and peak."""
    caps = [MemoryCap(f"pool{i}", int(small * GIB * 2 ** i)) for i in range(3)]
    try:
        with tempfile.TemporaryDirectory() as folder:
            specs: list[dict[str, Any]] = [
                {"rank": r, "world": 3, "split": SPLIT, "steps": steps, "width": width,
                 "layers": layers, "shard_state": mode, "store": f"{folder}/store",
                 "result": f"{folder}/rank-{r}.json"} for r in range(3)]
            codes = run_ranks(specs, list(caps), RUN_S, logs=Path(folder))
            results = [json.loads(Path(s["result"]).read_text()) if code == 0 else None
                       for s, code in zip(specs, codes, strict=True)]
        peaks = [cap.peak() for cap in caps]
        killed = [cap.oom_kills() for cap in caps]
    finally:
        for cap in caps:
            cap.close()
    return {"mode": mode, "layers": layers, "ok": codes == [0, 0, 0], "codes": codes,
            "oom_kills": killed, "peaks": peaks, "caps": [c.limit for c in caps],
            "results": results, "parameters": layers * (width * width + width)}


def largest(mode: str, args: argparse.Namespace) -> tuple[dict[str, Any] | None, list[str]]:
    """(a): the ladder tried in order; the last run that ended, and a line per run."""
    best, lines = None, []
    for layers in args.ladder:
        done = run(mode, args.width, layers, 1, args.small_gib)
        lines.append(f"  {mode:<10} {layers:>3} layers {done['parameters'] / 1e6:>7.1f} M "
                     f"params: {'trained' if done['ok'] else 'failed'} "
                     f"(oom kills {done['oom_kills']})")
        print(lines[-1], flush=True)
        if not done["ok"]:
            break
        best = done
    return best, lines


def memory_lines(done: dict[str, Any]) -> list[str]:
    """(c): per rank, its peak charge, its budget and its cap (GiB)."""
    lines = []
    for r, (peak, cap, result) in enumerate(zip(done["peaks"], done["caps"], done["results"],
                                                strict=True)):
        budget = result["state_budget"] if result else None
        state = result["state_bytes"] if result else None
        lines.append(f"  {done['mode']:<10} rank {r}: peak {_g(peak)} of cap {_g(cap)}; "
                     f"state {_g(state)} of budget {_g(budget)}")
    return lines


def _g(value: float | None) -> str:
    return "?" if value is None else f"{value / GIB:.2f} GiB"


def step_median(done: dict[str, Any]) -> tuple[float, float, float]:
    """Rank 0's median step (first left out), and the spread (min, max) of those steps."""
    times = done["results"][0]["step_s"][1:]
    return statistics.median(times), min(times), max(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-gib", type=float, default=1.0,
                        help="the small host's cap; the others 2x and 4x (default 1)")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--ladder", type=lambda t: [int(x) for x in t.split(",")],
                        default=[10, 12, 13, 14, 16, 18, 20, 22, 24],
                        help="layer counts tried, ascending")
    parser.add_argument("--steps", type=int, default=6, help="(b): steps per run")
    parser.add_argument("--timed-layers", type=int,
                        help="(b): the size timed (default: the rung below replicate's largest)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    if (reason := why_not()) is not None:
        print(f"pooled_memory: {reason}", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print(f"(a) largest model, caps {args.small_gib:g}:{2 * args.small_gib:g}:"
          f"{4 * args.small_gib:g} GiB, width {args.width}, AdamW fp32", flush=True)
    found = {mode: largest(mode, args)[0] for mode in ("replicate", "gradients")}
    sizes = {m: (d["parameters"] if d else 0) for m, d in found.items()}
    if sizes["replicate"]:
        print(f"  sharded / replicated parameters: "
              f"{sizes['gradients'] / sizes['replicate']:.2f}x")
    fits = [n for n in args.ladder if found["replicate"] and n <= found["replicate"]["layers"]]
    layers = args.timed_layers or (fits[-2] if len(fits) > 1 else fits[0] if fits else None)
    timed = {}
    if layers is not None:
        print(f"(b) step time at {layers} layers, {args.steps} steps", flush=True)
        for mode in ("replicate", "optimizer", "gradients"):
            timed[mode] = run(mode, args.width, layers, args.steps, args.small_gib)
            if timed[mode]["ok"]:
                median, low, high = step_median(timed[mode])
                print(f"  {mode:<10} median {median:.3f} s (min {low:.3f}, max {high:.3f})")
        if all(t["ok"] for t in timed.values()):
            base = step_median(timed["replicate"])[0]
            for mode in ("optimizer", "gradients"):
                print(f"  {mode} / replicate: {step_median(timed[mode])[0] / base:.3f}")
    print("(c) peak memory per rank against its budget and cap")
    for done in [*(d for d in found.values() if d), *timed.values()]:
        if done["ok"]:
            print("\n".join(memory_lines(done)))
    print(f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f} "
          f"({os.cpu_count()} cores)")
    if args.json:
        args.json.write_text(json.dumps({"largest": found, "timed": timed}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
