"""Pooled memory, side by side in one run, on three CPU "hosts" of this machine, each rank in a
memory cgroup of its own capped 1:2:4 (bench/_memory_caps.py; root, cgroup v1 or v2):

(a) the largest model (parameters) each arm trains: an MLP of square ``--width`` layers, the
    layer counts of ``--ladder`` tried in order, the arms interleaved at each rung, an arm
    leaving the ladder at its first OOM kill;
(b) step time of each arm ÷ replicated at a size all fit (rank 0's median step, the first left
    out, ``--steps`` steps), the arms interleaved over ``--rounds`` rounds, the median of the
    rounds' medians;
(c) each rank's peak memory (its cgroup's peak charge) against its budget (its cgroup's room
    as the rank measured it) and its cap.

The arms: ``replicate``, ``optimizer`` (stage 1, timed only) and ``gradients`` (stage 2) of
this checkout; with ``--before DIR``, also ``gradients`` of the checkout in DIR (the code
before a change: ``git archive REV | tar -x -C DIR``), as ``gradients-before``. The ranks run
corral's optimizer step (trainer/step/optim.py, AdamW) through ``bench/_capped_rank.py``:
sharded, the owners' reduces and broadcasts; replicated, one all-reduce of the flat gradient
after the backward (DDP's arithmetic without its overlap; its memory as DDP's default, whose
buckets are a second copy of the gradients).

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

from bench._memory_caps import REPO, MemoryCap, run_ranks, why_not

GIB = 1 << 30
SPLIT = [4, 8, 16]
"""Rows per rank, proportional to the hosts' caps."""
RUN_S = 900.0


Arm = tuple[str, str, Path]
"""(label, shard_state, checkout) of one side of the comparison."""


def run(arm: Arm, width: int, layers: int, steps: int, small: float) -> dict[str, Any]:
    """One run of the three capped ranks: whether it ended, each rank's result and peak."""
    label, mode, repo = arm
    caps = [MemoryCap(f"pool{i}", int(small * GIB * 2 ** i)) for i in range(3)]
    try:
        with tempfile.TemporaryDirectory() as folder:
            specs: list[dict[str, Any]] = [
                {"rank": r, "world": 3, "split": SPLIT, "steps": steps, "width": width,
                 "layers": layers, "shard_state": mode, "store": f"{folder}/store",
                 "result": f"{folder}/rank-{r}.json"} for r in range(3)]
            codes = run_ranks(specs, list(caps), RUN_S, logs=Path(folder), repo=repo)
            results = [json.loads(Path(s["result"]).read_text()) if code == 0 else None
                       for s, code in zip(specs, codes, strict=True)]
        peaks = [cap.peak() for cap in caps]
        killed = [cap.oom_kills() for cap in caps]
    finally:
        for cap in caps:
            cap.close()
    return {"mode": label, "layers": layers, "ok": codes == [0, 0, 0], "codes": codes,
            "oom_kills": killed, "peaks": peaks, "caps": [c.limit for c in caps],
            "results": results, "parameters": layers * (width * width + width)}


def largest(arms: list[Arm], args: argparse.Namespace) -> dict[str, dict[str, Any] | None]:
    """(a): the ladder tried in order, every arm still in at each rung (interleaved); per arm
    the last run that ended."""
    best: dict[str, dict[str, Any] | None] = {arm[0]: None for arm in arms}
    alive = list(arms)
    for layers in args.ladder:
        for arm in list(alive):
            done = run(arm, args.width, layers, 1, args.small_gib)
            print(f"  {arm[0]:<16} {layers:>3} layers {done['parameters'] / 1e6:>7.1f} M "
                  f"params: {'trained' if done['ok'] else 'failed'} "
                  f"(oom kills {done['oom_kills']})", flush=True)
            if done["ok"]:
                best[arm[0]] = done
            else:
                alive.remove(arm)
        if not alive:
            break
    return best


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


def timed(arms: list[Arm], layers: int, args: argparse.Namespace) -> dict[str, Any]:
    """(b): every arm run ``--rounds`` times, interleaved; per arm its runs and the median of
    their median steps (None when a run failed)."""
    runs: dict[str, list[dict[str, Any]]] = {arm[0]: [] for arm in arms}
    for _ in range(args.rounds):
        for arm in arms:
            runs[arm[0]].append(run(arm, args.width, layers, args.steps, args.small_gib))
    medians = {label: (statistics.median(step_median(d)[0] for d in done)
                       if all(d["ok"] for d in done) else None)
               for label, done in runs.items()}
    for label, median in medians.items():
        rounds = [f"{step_median(d)[0]:.3f}" if d["ok"] else "failed" for d in runs[label]]
        print(f"  {label:<16} median {median if median is None else f'{median:.3f}'} s "
              f"(rounds: {', '.join(rounds)})")
    base = medians.get("replicate")
    for label, median in medians.items():
        if label != "replicate" and median is not None and base:
            print(f"  {label} / replicate: {median / base:.3f}")
    return {"runs": runs, "medians": medians}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-gib", type=float, default=1.0,
                        help="the small host's cap; the others 2x and 4x (default 1)")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--ladder", type=lambda t: [int(x) for x in t.split(",")],
                        default=[10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34],
                        help="layer counts tried, ascending")
    parser.add_argument("--steps", type=int, default=6, help="(b): steps per run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="(b): runs per arm, interleaved (0: no (b))")
    parser.add_argument("--timed-layers", type=int,
                        help="(b): the size timed (default: the rung below replicate's largest)")
    parser.add_argument("--before", type=Path,
                        help="a checkout of the code before (its gradients arm beside ours)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    return parser.parse_args()


def main() -> int:
    args = parse()
    if (reason := why_not()) is not None:
        print(f"pooled_memory: {reason}", file=sys.stderr)
        return 2
    load = os.getloadavg()
    before: list[Arm] = ([("gradients-before", "gradients", args.before.resolve())]
                         if args.before else [])
    arms: list[Arm] = [("replicate", "replicate", REPO), *before, ("gradients", "gradients", REPO)]
    print(f"(a) largest model, caps {args.small_gib:g}:{2 * args.small_gib:g}:"
          f"{4 * args.small_gib:g} GiB, width {args.width}, AdamW fp32", flush=True)
    found = largest(arms, args)
    sizes = {m: (d["parameters"] if d else 0) for m, d in found.items()}
    for label in sizes:
        if label != "replicate" and sizes["replicate"]:
            print(f"  {label} / replicate parameters: {sizes[label] / sizes['replicate']:.2f}x")
    fits = [n for n in args.ladder if found["replicate"] and n <= found["replicate"]["layers"]]
    layers = args.timed_layers or (fits[-2] if len(fits) > 1 else fits[0] if fits else None)
    times: dict[str, Any] = {}
    if layers is not None and args.rounds > 0:
        print(f"(b) step time at {layers} layers, {args.steps} steps, {args.rounds} rounds",
              flush=True)
        times = timed([arms[0], ("optimizer", "optimizer", REPO), *arms[1:]], layers, args)
    print("(c) peak memory per rank against its budget and cap")
    last_rounds = [done[-1] for done in times.get("runs", {}).values()]
    for done in [*(d for d in found.values() if d), *last_rounds]:
        if done["ok"]:
            print("\n".join(memory_lines(done)))
    print(f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f} "
          f"({os.cpu_count()} cores)")
    if args.json:
        args.json.write_text(json.dumps({"largest": found, "timed": times}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
