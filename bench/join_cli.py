"""What ``corral join HOST`` costs from the key to the joiner's first step, through the real
command line (issue 78): ``corral init``'s demo cluster.toml (three local hosts, as it stands but
for a long run), ``corral run --detach``; then ``--rounds`` times ``corral leave medium`` and,
once it has left, ``corral join medium``. Per join, from the bench's clock just before the
command (the events' clock) and the events of the run:

- ``command``: until ``corral join`` returned (its check, push and the joiner's launch);
- ``admitted``: until rank 0's ``membership`` event ``joined`` (the new generation's first step);
- ``first step``: until the joiner's own first completed step;
- the ``joined`` event's ``phases`` (``check``, ``push``, ``start``: the joiner's start, from its
  launcher to its announcement; ``admission``: from the announcement to its first step).

After each join, beside the same run, a bare ``torchrun --standalone`` start of one gloo rank
is timed to the moment it could take its first step (torch imported, the process group made,
a CNN of the demo's size wrapped in ``DistributedDataParallel`` and its SGD optimizer made: what
any DDP rank does before its first step, torch's ``_dynamo`` import by both included), and the
run's step time read from rank 0's events: the issue's goal for the joiner (``start`` +
``admission``) is at most that bare start + the state ÷ the link + one step (the hosts here
share a machine: no link to cross).

    python bench/join_cli.py [--rounds N] [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

from remote.config.init import demo_toml  # noqa: E402

WAIT_S = 600.0


HOST_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
"""The hosts' environment: a host reached over SSH keeps the bytecode its ranks compiled, so
a host that joins again does not compile corral's modules anew (the demo's local hosts inherit
this environment, where a developer's may forbid bytecode)."""


def corral(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``corral -c path ARGS`` with ``path``'s folder as HOME (the run's records there)."""
    done = subprocess.run([sys.executable, "-m", "console", "-c", str(path), *args],
                          capture_output=True, text=True, timeout=WAIT_S, cwd=path.parent,
                          env={**HOST_ENV, "HOME": str(path.parent), "COLUMNS": "200",
                               "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise SystemExit(f"corral {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def events(run_dir: Path, member: int) -> list[dict[str, Any]]:
    path = run_dir / "metrics" / f"rank-{member}.jsonl"
    whole = path.read_text().split("\n")[:-1] if path.exists() else []  # last: being written
    return [json.loads(line) for line in whole if line.strip()]


def changes(run_dir: Path) -> list[dict[str, Any]]:
    return [e for e in events(run_dir, 0) if e["event"] == "membership"]


def wait(what: str, condition: Callable[[], bool], run_dir: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {WAIT_S} s")
        if ended := [e for e in events(run_dir, 0) if e["event"] == "end"]:
            raise SystemExit(f"{what}: the run ended first: {ended[-1]}")
        time.sleep(0.1)  # polling the run's files, with a deadline


def one_join(path: Path, run_dir: Path) -> dict[str, Any]:
    """``corral leave medium``, then (once it left) ``corral join medium``, timed."""
    before = len(changes(run_dir))
    corral(path, "leave", "medium")
    wait("medium left", lambda: len(changes(run_dir)) > before, run_dir)
    t0 = time.time()
    corral(path, "join", "medium")
    command = time.time() - t0
    wait("medium joined", lambda: len(changes(run_dir)) > before + 1, run_dir)
    joined = changes(run_dir)[-1]
    assert joined["change"] == "joined", joined
    member = joined["members"][-1]
    wait("its first step", lambda: any(e["event"] == "step" for e in events(run_dir, member)),
         run_dir)
    first = next(e for e in events(run_dir, member) if e["event"] == "step")
    return {"command_s": command, "admitted_s": joined["t"] - t0,
            "first_step_s": first["t"] - t0, "state_bytes": joined.get("state_bytes"),
            "phases": joined.get("phases") or {}, "load": os.getloadavg()[0]}


BARE_RANK = """\
import time
import torch
import torch.distributed as dist
from torch import nn
dist.init_process_group("gloo")
model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
                      nn.Linear(128, 10))
ddp = nn.parallel.DistributedDataParallel(model)
optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
print(time.time(), flush=True)
dist.destroy_process_group()
"""


def bare_start(folder: Path) -> float:
    """Seconds from a bare ``torchrun --standalone`` start of one gloo rank to the rank ready
    for its first step (its group, DDP module and optimizer made: what the joiner's ``start``
    phase counts, its launcher to its announcement)."""
    script = folder / "bare_rank.py"
    script.write_text(BARE_RANK, encoding="utf-8")
    began = time.time()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=1", str(script)], check=True, capture_output=True,
                          text=True, timeout=WAIT_S, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(done.stdout.split()[-1]) - began


def step_time(run_dir: Path) -> float:
    """The median seconds between rank 0's last 20 steps."""
    times = [e["t"] for e in events(run_dir, 0) if e["event"] == "step"][-21:]
    return statistics.median(b - a for a, b in itertools.pairwise(times))


def spread(values: list[float]) -> str:
    return (f"median {statistics.median(values):.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, help="write every join's figures here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="join-cli-") as folder:
        path = Path(folder) / "cluster.toml"
        path.write_text(demo_toml().replace("steps = 300", "steps = 100000"), encoding="utf-8")
        found = re.search(r"launched run ([^\s:]+)", corral(path, "run", "--detach").stdout)
        assert found is not None
        run_dir = Path(folder) / ".corral" / "runs" / found.group(1)
        try:
            wait("step 5", lambda: any(e["event"] == "step" and e["step"] >= 5
                                       for e in events(run_dir, 0)), run_dir)
            joins = []
            for _ in range(args.rounds):  # a join, then a bare start beside the same run
                joins.append(one_join(path, run_dir))
                joins[-1]["bare_start_s"] = bare_start(Path(folder))
                joins[-1]["step_s"] = step_time(run_dir)
        finally:
            subprocess.run([sys.executable, "-m", "console", "-c", str(path), "stop",
                            found.group(1)], capture_output=True, timeout=WAIT_S,
                           cwd=folder, env={**os.environ, "HOME": folder,
                                            "PYTHONPATH": str(REPO)})
    for name in ("command_s", "admitted_s", "first_step_s", "bare_start_s", "step_s"):
        print(f"{name}: {spread([j[name] for j in joins])}")
    for phase in sorted({k for j in joins for k in j["phases"]}):
        took = [j["phases"][phase] for j in joins if phase in j["phases"]]
        print(f"phase {phase}: {spread(took)}")
    own = [j["phases"]["start"] + j["phases"]["admission"] for j in joins
           if {"start", "admission"} <= set(j["phases"])]
    goal = [j["bare_start_s"] + j["step_s"] for j in joins]
    if own:
        ratio = statistics.median(own) / statistics.median(goal)
        print(f"the joiner's start to its first step: {spread(own)}; goal (a bare start + one "
              f"step): {spread(goal)}; ratio {ratio:.2f}")
    print(f"state_bytes: {[j['state_bytes'] for j in joins]}; load: "
          f"{[round(j['load'], 1) for j in joins]}")
    if args.json:
        args.json.write_text(json.dumps(joins, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
