"""What ``corral run`` costs a plain DDP script: the same script under bare ``torchrun`` and
under ``corral run`` on local hosts of this machine, interleaved rounds, medians.

The script (written to a temporary folder, no opt-in) trains a small MLP with DDP over gloo,
one thread per rank, and times itself on rank 0, the same way under both launchers: its
steps/s over the steps after ``--warmup`` (wall time between two optimizer steps' ends), the
wall time it started running (after the launcher, rendezvous and imports) and the wall time
of its first optimizer step's end. Under corral the step hooks of
``trainer.integrations.plain_events`` count, time and write every step (the cost measured
here); the goal is corral / bare >= 0.98.

Time from command to first step, by phase:

- bare: launcher + rendezvous + imports (command -> the script runs), script (-> first step);
  both for one ``--standalone`` launcher and for one launcher per host as corral starts them
  (``--nnodes N --node-rank R``, torch's static rendezvous), without corral: on one machine
  each host's launcher is one more interpreter importing torch on the same cores, a cost of
  co-locating the hosts that no launcher avoids (on separate hosts they start side by side);
- corral: check and push (``checking`` -> ``launching``, connection included), launch
  (-> ``running``), launchers up (-> the last host's torchrun starts its rendezvous: its
  interpreter and torch's import), rendezvous (-> the last host's rendezvous is complete),
  ranks up (-> the script runs: the rank's interpreter, torch's and corral's imports, the
  process group), script (-> its first step), delivery (-> the follower has the first step
  event). The two launcher marks are the wall times of torchrun's own INFO lines (corral
  launches it with ``LOGLEVEL=INFO``), on this machine's clock as the hosts are local. The
  run's own lines timing each part of its check and push are printed as they come (each
  host's probe and its torch probe, the mesh, each host's push): ``bench/check_phase.py``
  measures those two phases alone.

On a busy machine the two launchers' whole runs differ by more than the hooks can cost, so
the hooks are also measured alone (``--hook-blocks``): in this process (one rank, gloo), a
tiny DDP step timed in alternating blocks with ``PlainEvents``' hooks installed (events
written to a scratch run directory) and without: their cost per step in microseconds, and the
steps/s ratio that cost gives at the script's own step time.

    python bench/script_overhead.py --rounds 3 --nproc 3 --steps 300
"""

from __future__ import annotations

import asyncio
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _common import REPO, bare_env, markdown_table, rounds_parser, run_main

sys.path.insert(0, str(REPO))

from remote.api import LogLine, RankEvent, RunStatus
from remote.config.cluster import (
    ClusterConfig,
    ClusterSection,
    HostSection,
    RunSection,
)
from remote.run.controller import SshRunController
from trainer.events import StepEvent
from trainer.integrations.contract import ScriptSettings
from trainer.integrations.plain_events import PlainEvents

SCRIPT = """\
import sys, time
import torch, torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

began = time.time()
dist.init_process_group("gloo")
rank = dist.get_rank()
steps, warmup = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
model = DDP(nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10)))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
ends = []
for step in range(steps):
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    ends.append(time.time())
if rank == 0:
    rate = (steps - warmup) / (ends[-1] - ends[warmup - 1])
    print(f"SCRIPT began={began:.6f} first={ends[0]:.6f} rate={rate:.4f}", flush=True)
dist.destroy_process_group()
"""
RESULT = re.compile(r"SCRIPT began=([\d.]+) first=([\d.]+) rate=([\d.]+)")
TORCHRUN_MARK = re.compile(r"I(\d{4}) (\d\d:\d\d:\d\d\.\d+) .*\] \[default\] "
                           r"(Rendezvous'ing|Rendezvous complete)")
"""torchrun's INFO lines as a launcher starts its rendezvous and as it completes (glog time)."""
TIMING_LINE = re.compile(r"corral: (check|push) took ")
"""The run's log lines that time the check's and the push's parts (``remote.run.start``)."""
SIDES = ("bare", "bare per host", "corral")
"""``torchrun --standalone`` (one launcher), one torchrun launcher per host as corral starts
them but without corral (``bare_hosts``), and ``corral run``."""
BARE_PHASES = ("launcher+rendezvous+imports", "script to first step")
CORRAL_PHASES = ("check and push", "launch", "launchers up", "rendezvous", "ranks up",
                 "script to first step", "delivery")


def bare(script: Path, args: list[str], nproc: int, threads: int) -> dict[str, float]:
    """One run under ``torchrun --standalone``: its rate and phases."""
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={nproc}", str(script), *args],
        cwd=script.parent, env=bare_env(threads), capture_output=True, text=True, timeout=600)
    found = RESULT.search(proc.stdout)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"bare torchrun: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    began, first, rate = map(float, found.groups())
    return {"rate": rate, BARE_PHASES[0]: began - t0, BARE_PHASES[1]: first - began,
            "total": first - t0}


def bare_hosts(script: Path, args: list[str], nproc: int, threads: int) -> dict[str, float]:
    """One run under ``nproc`` torchrun launchers of one rank each, started as corral starts
    them (one node per host, torch's static rendezvous on node 0's port), without corral:
    what co-locating that many hosts' launchers on this one machine costs any launcher."""
    with socket.socket() as probe:  # a free port for node 0's store
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t0 = time.time()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nproc}",
         "--nproc-per-node=1", f"--node-rank={node}", "--rdzv-backend=static",
         f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=bench", "--local-addr=127.0.0.1",
         str(script), *args],
        # node 0 (rank 0's result line) read through pipes; the others' output dropped, never
        # left in a pipe nobody reads while node 0 is waited on
        cwd=script.parent, env=bare_env(threads), text=True,
        stdout=subprocess.DEVNULL if node else subprocess.PIPE,
        stderr=subprocess.DEVNULL if node else subprocess.PIPE) for node in range(nproc)]
    out, err = procs[0].communicate(timeout=600)
    for proc in procs[1:]:
        proc.wait(timeout=600)
    found = RESULT.search(out)
    if any(proc.returncode for proc in procs) or found is None:
        raise RuntimeError(f"torchrun per host: exits {[p.returncode for p in procs]}\n"
                           f"{err[-2000:]}")
    began, first, rate = map(float, found.groups())
    return {"rate": rate, BARE_PHASES[0]: began - t0, BARE_PHASES[1]: first - began,
            "total": first - t0}


def cluster(folder: Path, script: Path, args: list[str], nproc: int, threads: int
            ) -> ClusterConfig:
    hosts = tuple(HostSection(name=f"h{i}", address="local", python=sys.executable,
                              workdir=str(folder / "work"), gpus=0, nproc=1, threads=threads,
                              pin_cores=False) for i in range(nproc))
    return ClusterConfig(
        path=folder / "cluster.toml",
        cluster=ClusterSection(name="bench", master="h0", run_root=str(folder / "runs")),
        hosts=hosts, run=RunSection(script=str(script), args=tuple(args)))


async def corral(config: ClusterConfig) -> dict[str, float]:
    """One run through the run API, as ``corral run`` starts it: its rate and phases."""
    t0 = time.time()
    marks: dict[str, float] = {}
    found = None
    controller = SshRunController(config)
    try:
        handle = await controller.start()
        async for event in handle.events():
            now = time.time()
            if isinstance(event, RunStatus):
                marks.setdefault(event.state, now)
                if event.state in ("failed", "stopped"):
                    raise RuntimeError(f"corral run {event.state}: {event.detail}")
            elif isinstance(event, RankEvent) and isinstance(event.event, StepEvent):
                marks.setdefault("step", now)
            elif isinstance(event, LogLine):
                found = found or RESULT.search(event.text)
                torchrun_mark(event.text, marks)
                if TIMING_LINE.match(event.text):  # where the check and push's time went
                    print(f"  {event.text}", flush=True)
    finally:
        await controller.aclose()
    if found is None or "step" not in marks:
        raise RuntimeError(f"corral run: no result line or no step event ({sorted(marks)})")
    began, first, rate = map(float, found.groups())
    joined, complete = marks["Rendezvous'ing"], marks["Rendezvous complete"]
    phases = dict(zip(CORRAL_PHASES, (marks["launching"] - t0,
                                      marks["running"] - marks["launching"],
                                      joined - marks["running"], complete - joined,
                                      began - complete, first - began,
                                      marks["step"] - first), strict=True))
    return {"rate": rate, **phases, "total": marks["step"] - t0}


def torchrun_mark(text: str, marks: dict[str, float]) -> None:
    """Keep the latest host's wall time of each of torchrun's two rendezvous lines."""
    found = TORCHRUN_MARK.search(text)
    if found is None:
        return
    day, clock, what = found.groups()
    when = datetime.strptime(f"{time.localtime().tm_year}{day} {clock}",
                             "%Y%m%d %H:%M:%S.%f").timestamp()
    marks[what] = max(marks.get(what, 0.0), when)


def hooks_alone(folder: Path, blocks: int, steps: int) -> float:
    """The hooks' own cost per step, in seconds: a tiny DDP step (so that the hooks are a
    large part of it and the machine's noise a small one), timed in alternating blocks of
    ``steps`` with and without ``PlainEvents``' hooks; the median of the block pairs'
    differences."""
    import os

    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    with socket.socket() as probe:  # a free port for this one-rank group's store
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    model = DistributedDataParallel(nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 4)

    def block() -> float:
        began = time.perf_counter()
        for _ in range(steps):
            model(x).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        return (time.perf_counter() - began) / steps

    block()  # warm-up
    times: dict[bool, list[float]] = {True: [], False: []}
    for index in range(blocks):
        for hooked in ((True, False) if index % 2 == 0 else (False, True)):
            events = (PlainEvents(ScriptSettings(run_dir=str(folder / f"h{index}")),
                                  torch.device("cpu"), "bench.py") if hooked else None)
            times[hooked].append(block())
            if events is not None:
                events.end(None)
    dist.destroy_process_group()
    costs = sorted(on - off for on, off in zip(times[True], times[False], strict=True))
    cost = statistics.median(costs)
    print(f"hooks alone: a tiny DDP step, {blocks} blocks of {steps} steps each side, "
          f"interleaved: {statistics.median(times[False]) * 1e6:.1f} us without, "
          f"{statistics.median(times[True]) * 1e6:.1f} us with; the hooks cost "
          f"{cost * 1e6:.1f} us per step (median of block pairs; quartiles "
          f"{costs[len(costs) // 4] * 1e6:.1f}-{costs[3 * len(costs) // 4] * 1e6:.1f})\n",
          flush=True)
    return cost


def main() -> int:
    p = rounds_parser(__doc__)
    p.set_defaults(nproc=3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--hook-blocks", type=int, default=20,
                   help="blocks per side of the hooks-alone measure (0: skip it)")
    p.add_argument("--no-launch", action="store_true",
                   help="only the hooks-alone measure (no torchrun or corral runs)")
    args = p.parse_args()
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="corral-script-bench-") as tmp:
        cost = hooks_alone(Path(tmp) / "hooks", args.hook_blocks, 300) if args.hook_blocks else 0.0
        if args.no_launch:
            return 0
        folder = Path(tmp)
        script = folder / "user" / "train.py"
        script.parent.mkdir()
        script.write_text(SCRIPT)
        script_args = [str(args.steps), str(args.warmup)]
        loop = asyncio.new_event_loop()  # one loop: its subprocess transports close in it
        for round_ in range(args.rounds):
            shift = round_ % len(SIDES)  # each side goes first in turn
            for side in SIDES[shift:] + SIDES[:shift]:
                if side == "bare":
                    result = bare(script, script_args, args.nproc, args.threads)
                elif side == "bare per host":
                    result = bare_hosts(script, script_args, args.nproc, args.threads)
                else:
                    config = cluster(folder / f"c{round_}", script, script_args, args.nproc,
                                     args.threads)
                    result = loop.run_until_complete(corral(config))
                runs[side].append(result)
                print(f"round {round_} {side}: {result['rate']:.2f} steps/s, first step "
                      f"{result['total']:.2f} s", flush=True)
        loop.close()
    report(runs)
    if cost:
        step = 1 / statistics.median(r["rate"] for r in runs["bare"])
        print(f"the hooks' cost at this script's step ({step * 1e3:.2f} ms under bare "
              f"torchrun): steps/s ratio {step / (step + cost):.4f}")
    return 0


def report(runs: dict[str, list[dict[str, float]]]) -> None:
    """Medians, the ratio with its per-round spread, and the phases of each side."""
    rates = {side: [r["rate"] for r in results] for side, results in runs.items()}
    ratios = [c / b for c, b in zip(rates["corral"], rates["bare"], strict=True)]
    rows = [[side, f"{statistics.median(rates[side]):.2f}",
             " ".join(f"{r:.2f}" for r in rates[side])] for side in SIDES]
    print(markdown_table(["launcher", "median steps/s", "per round"], rows))
    print(f"\ncorral / bare steps/s: median {statistics.median(ratios):.3f} "
          f"(per round {' '.join(f'{r:.3f}' for r in ratios)}; goal >= 0.98)\n")
    for other in ("bare", "bare per host"):
        gaps = [c["total"] - b["total"] for c, b in zip(runs["corral"], runs[other], strict=True)]
        print(f"corral - {other}, command -> first step: median {statistics.median(gaps):+.2f} s "
              f"(per round {' '.join(f'{g:+.2f}' for g in gaps)})")
    print()
    for side, phases in (("bare", BARE_PHASES), ("bare per host", BARE_PHASES),
                         ("corral", CORRAL_PHASES)):
        rows = [[name, f"{statistics.median(r[name] for r in runs[side]):.2f}"]
                for name in (*phases, "total")]
        print(f"{side}: command -> first step, medians (s)")
        print(markdown_table(["phase", "seconds"], rows) + "\n")


if __name__ == "__main__":
    run_main(main)
