"""Where a GPU rank's step leaves the GPU idle: corral's trainer under torch's profiler.

One rank of ``python -m trainer`` (torch's launcher, ``--standalone``) trains resnet18 B=512 as
bench/gpu_overhead.py does, with the loop's phases labelled (``record_function``: the share's
forward and backward, the optimizer step, the one host read of the tally, the step's report,
the resources poll, evaluation and rebalancing, the checkpoint's due check) and torch's
profiler recording ``--active`` steps after ``--skip``. From the trace: the device's busy time
per step, its idle time (the gaps between its kernels, copies and fills), and where the host
was when the device ran out of work — the phase a fix has to move off the step's critical path
(bench/gpu_overhead.py measured a fixed ~1.3 ms per step against a bare loop).

    python bench/gpu_step_gap.py --precision bf16 --json gap.json

Without CUDA it says so and exits with code 2; ``--device cpu`` runs the same pipeline on the
CPU, the aten operators standing in for device work (a check of the bench itself, not a figure).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import bare_env  # noqa: E402

LABEL = "corral/"
"""The prefix of every phase this bench labels in the trace."""
DEVICE_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}
"""Chrome-trace categories of work on a CUDA device."""


# -- In the rank: label the loop's phases and profile a window of steps ----------------------
def _labelled(owner: type, method: str, label: str, after: Callable[[], None] | None = None
              ) -> None:
    """Run ``owner.method`` inside a ``record_function(label)`` range (then ``after()``)."""
    from torch.profiler import record_function

    original = getattr(owner, method)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with record_function(LABEL + label):
            result = original(*args, **kwargs)
        if after is not None:
            after()
        return result

    setattr(owner, method, wrapper)


def rank_main(trace_out: Path, skip: int, active: int, device: str, argv: list[str]) -> int:
    """One rank: the trainer with its phases labelled and the profiler on for ``active`` steps
    after ``skip`` (a few warm-up steps between, as the profiler's schedule wants)."""
    from torch.profiler import ProfilerActivity, profile, schedule

    from trainer.__main__ import main
    from trainer.checkpoint.checkpointer import Checkpointer
    from trainer.exact_loop import Trainer
    from trainer.resources import ResourceReporter
    from trainer.step.accumulate import ShareRunner
    from trainer.step.exchange import ActiveSteps
    from trainer.step.tally import PendingTallies

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    profiler = profile(activities=activities,
                       schedule=schedule(wait=max(skip - 3, 0), warmup=3, active=active,
                                         repeat=1),
                       on_trace_ready=lambda p: p.export_chrome_trace(str(trace_out)))
    profiler.start()
    _labelled(Trainer, "train_step", "step", after=profiler.step)
    for owner, method, label in ((ShareRunner, "run", "share"),
                                 (ActiveSteps, "optimizer_step", "optimizer"),
                                 (PendingTallies, "read", "read"),
                                 (Trainer, "_report", "report"),
                                 (ResourceReporter, "poll", "resources"),
                                 (Trainer, "_evaluate", "evaluate"),
                                 (Trainer, "_rebalance", "rebalance"),
                                 (Checkpointer, "save", "checkpoint")):
        _labelled(owner, method, label)
    try:
        return main(argv)
    finally:
        profiler.stop()


# -- From the trace: the device's gaps, and where the host was -------------------------------
def merged(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """``intervals`` sorted and overlapping ones joined."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def host_phase_at(t: float, phases: list[tuple[float, float, str]]) -> str:
    """The innermost labelled host phase around time ``t`` (``between phases`` outside all)."""
    inside = [(end - start, name) for start, end, name in phases if start <= t < end]
    return min(inside)[1] if inside else "between phases"


def gaps_report(trace: dict[str, Any], device: str, min_gap_us: float) -> dict[str, Any]:
    """Per step of the profiled window: device busy and idle microseconds, the idle time by the
    host phase at each gap's start, and each phase's host time."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
    phases = [(float(e["ts"]), float(e["ts"]) + float(e["dur"]), e["name"][len(LABEL):])
              for e in events
              if e.get("cat") == "user_annotation" and str(e.get("name", "")).startswith(LABEL)]
    steps = sorted((s, e) for s, e, name in phases if name == "step")
    if len(steps) < 2:
        raise RuntimeError("the profiled window holds fewer than two steps")
    if device == "cuda":
        work = [e for e in events if e.get("cat") in DEVICE_CATEGORIES]
    else:  # the CPU check: aten operators stand in for device work
        work = [e for e in events if str(e.get("name", "")).startswith("aten::")]
    busy = merged((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in work)
    # From the first step's start to the last step's: whole steps, launch to launch. A gap
    # belongs to the window where the device ran dry.
    window = (steps[0][0], steps[-1][0])
    idle_by_phase: dict[str, float] = defaultdict(float)
    for (_, end_a), (start_b, _) in itertools.pairwise(busy):
        if window[0] <= end_a < window[1] and start_b - end_a >= min_gap_us:
            idle_by_phase[host_phase_at(end_a, phases)] += start_b - end_a
    n = len(steps) - 1
    span = window[1] - window[0]
    busy_us = sum(min(e, window[1]) - max(s, window[0]) for s, e in busy
                  if e > window[0] and s < window[1])
    host_us: dict[str, list[float]] = defaultdict(list)
    for start, end, name in phases:
        if window[0] <= start < window[1]:
            host_us[name].append(end - start)
    return {
        "steps": n,
        "step_us": span / n,
        "device_busy_us_per_step": busy_us / n,
        "device_idle_us_per_step": (span - busy_us) / n,
        "idle_us_per_step_by_host_phase": {k: v / n for k, v in sorted(
            idle_by_phase.items(), key=lambda kv: -kv[1])},
        "host_us_per_step_by_phase": {k: sum(v) / n for k, v in sorted(host_us.items())},
        "host_us_median_by_phase": {k: statistics.median(v) for k, v in sorted(host_us.items())},
    }


# -- The bench: launch the rank, read its trace ----------------------------------------------
def run_profiled(args: argparse.Namespace, trace_out: Path, run_dir: str) -> None:
    """``python -m trainer`` on one rank under the profiler (this file, ``--in-rank``)."""
    trainer_args = ["--device", args.device, "--precision", args.precision,
                    "--model", "resnet18", "--norm", "batch", "--samples", str(args.samples),
                    "--global-batch", str(args.global_batch),
                    "--steps", str(args.skip + args.active + 5), "--threads", str(args.threads),
                    "--momentum", "0.9", "--run-dir", run_dir, "--checkpoint-every", "0"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
           str(Path(__file__).resolve()), "--in-rank", str(trace_out), str(args.skip),
           str(args.active), args.device, *trainer_args]
    done = subprocess.run(cmd, cwd=REPO, env=bare_env(args.threads), capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
        raise RuntimeError(f"the profiled rank exited with {done.returncode}:\n{tail}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--global-batch", type=int, default=512)
    p.add_argument("--samples", type=int, default=512 * 24, help="synthetic training images")
    p.add_argument("--skip", type=int, default=40, help="steps before the profiler records")
    p.add_argument("--active", type=int, default=20, help="steps the profiler records")
    p.add_argument("--threads", type=int, default=4, help="CPU threads of the rank")
    p.add_argument("--min-gap-us", type=float, default=5.0, help="shorter idle gaps ignored")
    p.add_argument("--json", type=Path, help="also write the result here")
    return p


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--in-rank":
        trace, skip, active, device, *argv = sys.argv[2:]
        return rank_main(Path(trace), int(skip), int(active), device, argv)
    args = parser().parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu_step_gap.py needs a CUDA GPU: torch sees none on this machine "
              f"(torch {torch.__version__}); --device cpu checks the bench itself",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="corral-step-gap-") as tmp:
        trace_out = Path(tmp) / "trace.json"
        run_profiled(args, trace_out, os.path.join(tmp, "run"))
        report = gaps_report(json.loads(trace_out.read_text()), args.device, args.min_gap_us)
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    result = {"benchmark": "gpu_step_gap", "device": device, "torch": torch.__version__,
              "precision": args.precision, "global_batch": args.global_batch, **report}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from bench._common import run_main

    run_main(main)
