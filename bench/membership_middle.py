"""A planned leave of the middle host of ``corral init``'s demo cluster.toml (issue 78): what it
costs the survivors, and how far their result is from an uninterrupted run's.

The demo's three local hosts (fast, medium, slow: slowdown 1, 2, 3; one rank each, one thread)
train its ``[run]`` (simple_cnn on synthetic images, B=96, the dynamic balancer, split 32/32/32),
started as tests/trainer/membership_runs.py starts a live run. After ``--leave-at`` steps the
bench writes medium's leave request (what ``corral leave medium`` writes); slow's rank moves
from rank 2 to rank 1 (the case that used to kill it). Per round, from the runs' events:

- ``to step``: from the request to the survivors' first completed step without medium;
- ``event``: the ``membership`` event's ``seconds_to_step`` (from the request seen at the
  boundary to that step);
- ``step``: rank 0's median step time before the request (what one step costs here);
- ``distance``: the largest per-tensor ``max|a-b| / max|a|`` between the final parameters and
  one uninterrupted process's of the same run.

    python bench/membership_middle.py [--rounds N] [--leave-at STEP] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "trainer")]

from membership_runs import live_run  # noqa: E402
from trainer_runs import check, final_params, launch, max_rel_diff  # noqa: E402

from bench._common import markdown_table  # noqa: E402
from remote.config.init import demo_toml  # noqa: E402
from remote.config.read import parse_cluster  # noqa: E402

LEAVER = "medium"


def demo_flags(run_root: Path) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The demo's hosts, its ``[run]`` as trainer flags, and its per-rank flags (the split and
    each host's slowdown: the one-process reference has neither)."""
    config = parse_cluster(demo_toml(), path=run_root / "cluster.toml")
    run = config.run
    flags = ("--model", str(run.model), "--dataset", str(run.dataset), "--samples",
             str(run.samples), "--global-batch", str(run.global_batch), "--policy", run.policy,
             "--rebalance-every", str(run.rebalance_every), "--steps", str(run.steps),
             "--lr", str(run.lr), "--optimizer", run.optimizer, "--seed", str(run.seed),
             "--checkpoint-every", str(run.checkpoint_every))
    per_rank = ("--split", ",".join(str(s) for s in run.split or ()),
                "--slowdown", ",".join(str(h.slowdown) for h in config.hosts))
    return tuple(h.name for h in config.hosts), flags, per_rank


def one_round(root: Path, leave_at: int, alone: Path) -> dict[str, Any]:
    hosts, flags, per_rank = demo_flags(root)
    with live_run(root / "live", (*flags, *per_rank), hosts) as run:
        run.wait_for(f"step {leave_at}", lambda: run.steps_done() >= leave_at, timeout=600)
        before = [e for e in run.events(0) if e["event"] == "step"]
        asked = time.time()
        run.ask_leave(LEAVER)
        run.wait_for("the leave", lambda: bool(run.membership()), timeout=600)
        run.finish(timeout=900)
        [event] = run.membership()
        first = min(e["t"] for e in run.events(0)
                    if e["event"] == "step" and e["step"] > event["step"])
        return {"to_step_s": round(first - asked, 3), "event_s": event["seconds_to_step"],
                "cause": event["cause"], "at_step": event["step"],
                "step_s": round(statistics.median(e["step_s"] for e in before[-20:]), 3),
                "distance": max_rel_diff(final_params(alone), final_params(run.run_dir))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--leave-at", type=int, default=100)
    parser.add_argument("--json", type=Path, help="write every round's figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-middle-") as tmp:
        root = Path(tmp)
        _, flags, _ = demo_flags(root)
        alone = root / "alone"
        check(launch(1, *flags, "--run-dir", str(alone), timeout=1800))
        rounds = [one_round(root / f"round-{i}", args.leave_at, alone)
                  for i in range(args.rounds)]
    rows = [[i, r["at_step"], r["cause"], r["to_step_s"], r["event_s"], r["step_s"],
             f"{r['distance']:.2e}"] for i, r in enumerate(rounds)]
    print(markdown_table(["round", "left after step", "cause", "to step (s)", "event (s)",
                          "step (s)", "distance"], rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rounds, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
