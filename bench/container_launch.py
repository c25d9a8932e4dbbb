"""Launch time of a host in a container against the same host without one.

Three ``local`` hosts (one CPU rank each, the same interpreter). In the boxed variant the
second host runs in a real podman container, rootfs mode (this machine's root as an overlay,
so its Python and torch are the same: only the container differs). Each round starts one run
of each variant, interleaved (A, B, B, A, ...), through the run API as ``corral run`` does, and
times start -> the first ``step`` event of any rank (the check, the push, the launch, the
rendezvous, the first step), then stops it. Medians over ``--rounds`` rounds, and their ratio
(goal: boxed / bare <= 1.2).

    python bench/container_launch.py [--rounds 5]

Needs podman (and runc, with the containers.conf of /work/shared/notes/containers.md, which
this script writes to a temporary directory and passes as ``CONTAINERS_CONF``).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from remote.api import RankEvent  # noqa: E402
from remote.config.cluster import (  # noqa: E402
    ClusterConfig,
    ClusterSection,
    ContainerSection,
    HostSection,
    RunSection,
)
from remote.run.controller import SshRunController  # noqa: E402
from trainer.events import StepEvent  # noqa: E402

CONF = "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n"


def cluster(root: Path, conf: Path, *, boxed: bool) -> ClusterConfig:
    box = ContainerSection(rootfs="/", engine="podman") if boxed else None
    hosts = tuple(HostSection(name=f"h{i}", address="local", python=sys.executable,
                              workdir=str(root / "work"), gpus=0, nproc=1, threads=1,
                              env={"CONTAINERS_CONF": str(conf)} if i == 1 else {},
                              container=box if i == 1 else None) for i in range(3))
    run = RunSection(samples=64, global_batch=8, steps=100000, checkpoint_every=100000)
    return ClusterConfig(path=root / "cluster.toml",
                         cluster=ClusterSection(name="bench", run_root=str(root / "runs")),
                         hosts=hosts, run=run)


async def to_first_step(config: ClusterConfig) -> float:
    """Seconds from ``start`` to the first step event; the run is then stopped."""
    controller = SshRunController(config)
    try:
        began = time.perf_counter()
        handle = await controller.start()
        async for event in handle.events():
            if isinstance(event, RankEvent) and isinstance(event.event, StepEvent):
                took = time.perf_counter() - began
                break
        else:
            raise RuntimeError("the run ended before its first step")
        report = await handle.stop(grace_s=10)
        if not report.clean:
            raise RuntimeError(f"the stop left something: {report}")
        return took
    finally:
        await controller.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("podman") is None:
        print("podman is not installed: apt-get install podman runc", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {"bare": [], "boxed": []}
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        root = Path(tmp)
        conf = root / "containers.conf"
        conf.write_text(CONF)
        configs = {name: cluster(root / name, conf, boxed=name == "boxed") for name in times}
        asyncio.run(to_first_step(configs["bare"]))  # warm-up: the push, the disk cache
        for index in range(args.rounds):
            order = ["bare", "boxed"] if index % 2 == 0 else ["boxed", "bare"]
            for name in order:
                took = asyncio.run(to_first_step(configs[name]))
                times[name].append(took)
                print(f"round {index + 1} {name}: {took:.2f} s", flush=True)
    bare, boxed = (statistics.median(times[n]) for n in ("bare", "boxed"))
    print(f"\nstart -> first step, median of {args.rounds}: bare {bare:.2f} s, "
          f"boxed {boxed:.2f} s, ratio {boxed / bare:.3f} (goal <= 1.2)")
    print(f"spread: bare {min(times['bare']):.2f}-{max(times['bare']):.2f} s, "
          f"boxed {min(times['boxed']):.2f}-{max(times['boxed']):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
