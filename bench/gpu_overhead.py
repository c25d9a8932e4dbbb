"""GPU overhead benchmark: corral's trainer on one GPU against a bare DDP loop.

Both train resnet18 (CIFAR layout, BatchNorm) from corral's image task on the same synthetic
images, global batch ``--global-batch`` (512), SGD with momentum 0.9, NCCL, one rank, batches
from pinned host memory copied with ``non_blocking`` (bench/ddp_baseline.py ``--device cuda``;
corral prefetches so on CUDA by default). fp32 (TF32 off in the bare loop; corral's fp32 is its
own: see its start event's ``precision``) and bf16 (autocast). Neither loop saves a checkpoint
inside the timed window (corral runs with ``--checkpoint-every 0``). Each round runs every
(precision, loop) pair, alternating which loop goes first; a run's throughput is measured
between the end of step ``--skip`` and its last step. While a run trains, this process samples
the GPU's SM utilisation through NVML (profiles/nvml.py) every ``--sample-every`` seconds; a
run's figure is the mean of the samples inside its measured window. The result: per
precision, the median throughputs, their ratio corral / bare (goal >= 0.98) and the median SM
utilisation of each.

    python bench/gpu_overhead.py --rounds 3 --json gpu-overhead.json

Without CUDA it says so and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import bare_env  # noqa: E402


class UtilisationSampler:
    """SM utilisation of one GPU, ``(unix time, percent)`` every ``interval_s``, in a thread."""

    def __init__(self, cuda_index: int, interval_s: float) -> None:
        from profiles.nvml import NvmlSession

        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self._session = NvmlSession.open()
        self._handle = (self._session.handle_for_cuda_device(cuda_index)
                        if self._session is not None else None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def available(self) -> bool:
        return self._session is not None and self._handle is not None

    def __enter__(self) -> UtilisationSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._session is not None:
            self._session.close()

    def _run(self) -> None:
        assert self._session is not None
        while not self._stop.wait(self.interval_s):
            util = self._session.utilization(self._handle)
            if util is not None:
                self.samples.append((time.time(), float(util)))

    def mean_between(self, start: float, end: float) -> float | None:
        """The mean of the samples taken in ``[start, end]`` (None without any)."""
        inside = [u for t, u in self.samples if start <= t <= end]
        return statistics.fmean(inside) if inside else None


def _launcher() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1"]


def run_bare(args: argparse.Namespace, precision: str) -> tuple[float, float, float]:
    """(samples/s, window start, window end) of the bare DDP loop."""
    cmd = [*_launcher(), str(REPO / "bench" / "ddp_baseline.py"), "--device", "cuda",
           "--precision", precision, "--model", "resnet18", "--norm", "batch",
           "--samples", str(args.samples), "--global-batch", str(args.global_batch),
           "--steps", str(args.steps), "--skip", str(args.skip), "--threads", str(args.threads)]
    out = _run(cmd)
    result = json.loads(next(ln for ln in out.splitlines() if ln.startswith("{")))
    return float(result["samples_per_s"]), float(result["t_start"]), float(result["t_end"])


def run_corral(args: argparse.Namespace, precision: str) -> tuple[float, float, float]:
    """(samples/s, window start, window end) of ``python -m trainer`` from rank 0's steps."""
    with tempfile.TemporaryDirectory(prefix="corral-gpu-overhead-") as run_dir:
        cmd = [*_launcher(), "-m", "trainer", "--device", "cuda", "--precision", precision,
               "--model", "resnet18", "--norm", "batch", "--samples", str(args.samples),
               "--global-batch", str(args.global_batch), "--steps", str(args.steps),
               "--threads", str(args.threads), "--momentum", "0.9", "--run-dir", run_dir,
               "--checkpoint-every", "0"]  # the bare loop saves nothing either
        _run(cmd)
        lines = (Path(run_dir) / "metrics" / "rank-0.jsonl").read_text().splitlines()
    t = {e["step"]: e["t"] for e in map(json.loads, lines) if e["event"] == "step"}
    start, end = t[args.skip], t[args.steps]
    return (args.steps - args.skip) * args.global_batch / (end - start), start, end


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, cwd=REPO, env=bare_env(1), capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
        raise RuntimeError(f"{cmd[4]} exited with {done.returncode}:\n{tail}")
    return done.stdout


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--global-batch", type=int, default=512)
    p.add_argument("--samples", type=int, default=512 * 24, help="synthetic training images")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--skip", type=int, default=40, help="steps before the clock starts")
    p.add_argument("--threads", type=int, default=4, help="CPU threads of the rank")
    p.add_argument("--sample-every", type=float, default=0.1, help="NVML sampling period, s")
    p.add_argument("--json", type=Path, help="also write the result here")
    return p


def main() -> int:
    args = parser().parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench/gpu_overhead.py needs a CUDA GPU: torch sees none on this machine "
              f"(torch {torch.__version__})", file=sys.stderr)
        return 2
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    runs: dict[tuple[str, str], list[tuple[float, float | None]]] = {}
    loops = {"bare": run_bare, "corral": run_corral}
    with UtilisationSampler(0, args.sample_every) as sampler:
        for i in range(args.rounds):
            order = ("bare", "corral") if i % 2 == 0 else ("corral", "bare")
            for precision in precisions:
                for name in order:
                    rate, start, end = loops[name](args, precision)
                    util = sampler.mean_between(start, end)
                    runs.setdefault((precision, name), []).append((rate, util))
                    print(f"round {i + 1} {precision} {name}: {rate:.0f} samples/s, SM "
                          f"{'—' if util is None else f'{util:.0f}%'}", flush=True)
    result = _summary(args, precisions, runs, torch.cuda.get_device_name(0), torch.__version__)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _summary(args: argparse.Namespace, precisions: list[str],
             runs: dict[tuple[str, str], list[tuple[float, float | None]]], device: str,
             torch_version: str) -> dict[str, object]:
    """Per precision: medians of throughput and SM utilisation, and corral / bare."""
    figures: dict[str, object] = {}
    for precision in precisions:
        row: dict[str, object] = {}
        for name in ("bare", "corral"):
            rates = [rate for rate, _ in runs[(precision, name)]]
            utils = [u for _, u in runs[(precision, name)] if u is not None]
            row[f"{name}_samples_per_s"] = statistics.median(rates)
            row[f"{name}_rounds"] = rates
            row[f"{name}_sm_util"] = statistics.median(utils) if utils else None
        row["ratio"] = row["corral_samples_per_s"] / row["bare_samples_per_s"]  # type: ignore[operator]
        figures[precision] = row
    return {"benchmark": "gpu_overhead", "device": device, "torch": torch_version,
            "model": "resnet18", "global_batch": args.global_batch, "steps": args.steps,
            "skip": args.skip, "rounds": args.rounds, "results": figures}


if __name__ == "__main__":
    from bench._common import run_main

    run_main(main)
