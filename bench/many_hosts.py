"""Many hosts: ``corral check``, a 20-step run and a stop on 16 hosts against 2, over real sshd.

Each host is a network namespace with its own address and its own OpenSSH sshd (the cluster in
a box of ``tests/remote/netns.py``, on one bridge); corral runs from the controller namespace,
as a user's ``corral`` command: every figure is the real command line's. Every host has one
CPU rank with one thread (simple_cnn on synthetic data, global batch 32 whatever the host
count). By default the machine's cores are shared by all the hosts: with 16 hosts on 2
cores, 16 torch launchers and 16 ranks start on 2 cores, so what is CPU work on the hosts
(python + torch imports, the trainer's set-up) cannot be concurrent here. So each phase also
reports the hosts' CPU seconds (every host's sshd and all it starts, in one cpuacct cgroup)
and how busy the whole machine was: a phase whose hosts' work per host stays the same while
its wall time grows with the host count is bound by the shared cores, not by corral doing
hosts one by one (that is what ``tests/remote/test_hosts_at_once.py`` rules out).

``--host-cpu CORES`` gives every host the same CPU at every host count instead, as machines
of their own would have: each host's sshd (and so all it starts) in a cgroup of its own with a
CFS bandwidth quota of CORES of a core (cgroup v2's ``cpu.max``, or v1's ``cpu.cfs_quota_us``
where the cpu controller is v1's). With CORES = the machine's cores / the largest host count
(0.125 for 16 hosts on 2 cores) the hosts together can never ask for more than the machine has,
so the ratio measures corral with more hosts rather than the machine's core count; every host
is that much slower than a real one, at both counts. The cpuacct accounting is unchanged.

For each host count, a round measures:

- check: ``corral check`` (exit 0 required), wall time
- ``corral run`` of 20 steps, by the lines its headless follower prints as they arrive:
  start (process start -> ``run R: checking``: the command's own start-up), check + push
  (-> ``launching``), launch (-> ``running``), first step (-> the first ``step`` line: torch's
  rendezvous, the ranks' import and set-up, the first step), train (-> ``completed``), exit;
  the follower's CPU seconds during the run (first step -> completed, from /proc) and in all
- stop: a second run (400 steps), stopped with ``corral stop RUN`` once its first progress
  line arrives: the stop command's wall time and exit status (0: corral verified that nothing
  of the run is left), then, independently, the processes of the run (a launcher or a rank:
  its command line carries ``--run-dir`` and the run id) still in any host's namespace right
  after the stop returned, and whether every namespace is empty but its sshd once the
  follower, whose tailers also name the run, has exited (a deadline of 15 s)

Rounds alternate the host counts (2, 16, then 16, 2, ...) after one warm-up round of the
largest count that is not counted (the code is pushed there, so every counted run finds an
unchanged tree, as a user's second run does). Figures are medians over the rounds; the goal is
(check + run start -> first step) with 16 hosts <= 2 x the same with 2 hosts.

Needs root, ``ip netns``, sshd and ssh-keygen (the test helper's conditions), and for
``--host-cpu`` a cgroup cpu controller; it builds its namespaces on the subnet the netns tests
use, so it runs when they do not. Everything it made (namespaces, veths, bridge, sshds, the
cgroups) is removed at its end, after a failed run, Ctrl-C or SIGTERM too.

    python bench/many_hosts.py                 # 2 and 16 hosts, 3 rounds
    python bench/many_hosts.py --hosts 2,8 --rounds 1
    python bench/many_hosts.py --host-cpu 0.125   # every host 1/8 core, at 2 and at 16
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import run_main  # noqa: E402
from bench._hosts_cpu import HostsCpu, HostsCpuLimit, between  # noqa: E402
from bench._hosts_follow import (  # noqa: E402
    MARKS,
    RUN_PHASES,
    Followed,
    follow,
    run_processes,
    timed,
    wait_empty,
)
from tests.remote import netns  # noqa: E402

GOAL = 2.0
STEPS = 20
STOP_STEPS = 400
RUN = ('model = "simple_cnn"\ndataset = "synthetic_image"\nsamples = 480\nglobal_batch = 32\n'
       'steps = {steps}\npolicy = "static"\ncheckpoint_every = 0\n')


def write_cluster(box: netns.NetnsCluster, hosts: int, steps: int) -> None:
    box.write_cluster_toml(sys.executable, run=RUN.format(steps=steps),
                           order=[f"n{i}" for i in range(1, hosts + 1)])


def require(ok: bool, what: str, output: str) -> None:
    if not ok:
        raise RuntimeError(f"{what}\n{output[-3000:]}")


def add(figures: dict[str, float], phase: str, measured: dict[str, float]) -> None:
    """``measured`` (``between``'s) under ``phase``: ``PHASE`` is the wall time."""
    figures[phase] = measured["wall"]
    figures[f"{phase} busy"] = measured["busy"]
    figures[f"{phase} hosts cpu"] = measured["hosts cpu"]


def one_round(box: netns.NetnsCluster, hosts_cpu: HostsCpu, hosts: int) -> dict[str, float]:
    """check, a full run and a stopped run on the first ``hosts`` hosts; the figures."""
    figures: dict[str, float] = {}
    write_cluster(box, hosts, STEPS)
    check, done = timed(box, hosts_cpu, "check")
    require(done.returncode == 0, f"corral check on {hosts} hosts failed",
            done.stdout + done.stderr)
    add(figures, "check", check)
    run = follow(box, hosts_cpu, "run")
    output = "".join(run.lines)
    require(run.code == 0 and "completed" in run.at, f"run on {hosts} hosts failed", output)
    points = ("begin", *MARKS)
    for name, a, b in zip(RUN_PHASES, points[:-1], points[1:], strict=True):
        add(figures, name, between(run.at[a], run.at[b]))
    to_step = between(run.at["begin"], run.at["step"])
    add(figures, "to first step", to_step)
    add(figures, "goal measure", {key: check[key] + to_step[key] for key in check})
    figures["goal measure busy"] = float("nan")  # a sum of two phases' shares means nothing
    figures["follower cpu training"] = run.cpu["completed"] - run.cpu["step"]
    figures["follower cpu"] = run.cpu_total_s
    left = wait_empty(box)
    require(not left, f"processes left after a completed run: {left}", output)
    figures.update(stopped_round(box, hosts_cpu, hosts))
    return figures


def stopped_round(box: netns.NetnsCluster, hosts_cpu: HostsCpu,
                  hosts: int) -> dict[str, float]:
    """A long run stopped with ``corral stop`` at its first progress line: the stop's time,
    its exit status and what was left of the run."""
    write_cluster(box, hosts, STOP_STEPS)
    stop: dict[str, float] = {}

    def stop_at_first_step(mark: str, seen: Followed) -> None:
        if mark != "step":
            return
        measured, done = timed(box, hosts_cpu, "stop", seen.run_id)
        add(stop, "stop", measured)
        stop["stop exit"] = done.returncode
        left = run_processes(box, seen.run_id)
        stop["run processes left"] = len(left)
        for line in left:
            print(f"  left after the stop: {line}", flush=True)

    run = follow(box, hosts_cpu, "run", on_mark=stop_at_first_step)
    require("stop" in stop, f"the run to stop on {hosts} hosts never stepped",
            "".join(run.lines))
    stop["hosts not empty"] = len(wait_empty(box))
    return stop


def median(rounds: Sequence[dict[str, float]], name: str) -> float:
    return statistics.median(r[name] for r in rounds)


ROWS = ("check", *(f"run: {p}" for p in RUN_PHASES), "to first step", "goal measure", "stop")
"""The table's phases (``run:`` ones are ``corral run``'s, from the follower's lines)."""


def number(value: float, spec: str) -> str:
    """``value`` formatted with ``spec``; "-" for NaN (not measured)."""
    return "-" if math.isnan(value) else format(value, spec)


def report(results: dict[int, list[dict[str, float]]], rounds: int,
           host_cpu: float | None) -> None:
    """The table: per phase and host count, median wall time, the hosts' CPU seconds and the
    machine's busy share; the follower's CPU; what a stop left; the goal's verdict."""
    counts = sorted(results)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    share = ("the cores shared by all hosts" if host_cpu is None
             else f"every host limited to {host_cpu:g} core")
    print(f"\n## corral on {' and '.join(map(str, counts))} hosts in network namespaces, "
          f"1 CPU rank each, {os.cpu_count()} cores, {share}\n\nmedians of {rounds} round(s) "
          f"(counts alternated); load average at the end: {load}\n")
    print("| phase | " + " | ".join(f"{n} hosts: wall s (hosts' CPU s, machine busy)"
                                     for n in counts) + " | wall ratio |")
    print("|---|" + "---:|" * (len(counts) + 1))
    for row in ROWS:
        name = row.removeprefix("run: ")
        walls = [median(results[n], name) for n in counts]
        cells = [f"{wall:.2f} ({number(median(results[n], f'{name} hosts cpu'), '.1f')}, "
                 f"{number(median(results[n], f'{name} busy'), '.0%')})"
                 for n, wall in zip(counts, walls, strict=True)]
        print(f"| {row} | " + " | ".join(cells) + f" | {walls[-1] / walls[0]:.2f} |")
    for name in ("follower cpu training", "follower cpu"):
        values = [median(results[n], name) for n in counts]
        print(f"| {name} (CPU s) | " + " | ".join(f"{v:.2f}" for v in values)
              + f" | {values[-1] / values[0]:.2f} |")
    for name in ("stop exit", "run processes left", "hosts not empty"):
        print(f"| {name} (every round) | "
              + " | ".join(",".join(f"{r[name]:g}" for r in results[n]) for n in counts)
              + " | |")
    ratio = median(results[counts[-1]], "goal measure") / median(results[counts[0]],
                                                                 "goal measure")
    verdict = "met" if ratio <= GOAL else "NOT met"
    print(f"\ngoal: check + run start -> first step with {counts[-1]} hosts <= {GOAL:g} x "
          f"{counts[0]} hosts: {ratio:.2f} x, {verdict}")
    print("(hosts' CPU: every process on the hosts, their sshd's included; machine busy: the "
          "whole machine's CPU use, every core, other work on it included)")


def summary(figures: dict[str, float]) -> str:
    """One round's wall times and counts on one line."""
    return ", ".join(f"{k} {v:.2f}" for k, v in figures.items()
                     if not k.endswith((" busy", " hosts cpu")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="2,16",
                        help="host counts, comma-separated (default: 2,16)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default: 3)")
    parser.add_argument("--host-cpu", type=float, metavar="CORES",
                        help="limit every host to CORES of a core (e.g. 0.125: 2 cores / 16 "
                             "hosts), the same at every host count (default: no limit)")
    args = parser.parse_args()
    if args.host_cpu is not None and not 0.01 <= args.host_cpu <= (os.cpu_count() or 1):
        parser.error(f"--host-cpu {args.host_cpu:g}: give the cores per host, between 0.01 "
                     f"and this machine's {os.cpu_count()}, e.g. 0.125")
    counts = sorted(int(n) for n in args.hosts.split(","))
    if (reason := netns.unavailable_reason()) is not None:
        print(f"a cluster in network namespaces {reason}", file=sys.stderr)
        return 2
    results: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="corral-hosts-") as tmp:
        box = netns.build(Path(tmp), hosts=counts[-1])
        hosts_cpu = HostsCpu(box)
        limit = None
        try:
            if args.host_cpu is not None:
                limit = HostsCpuLimit(box, args.host_cpu)
                print(f"every host limited to {args.host_cpu:g} core ({limit.describe()})",
                      flush=True)
            print(f"warm-up, {counts[-1]} hosts: "
                  + summary(one_round(box, hosts_cpu, counts[-1])), flush=True)
            for index in range(args.rounds):
                for hosts in counts if index % 2 == 0 else reversed(counts):
                    figures = one_round(box, hosts_cpu, hosts)
                    results[hosts].append(figures)
                    print(f"round {index + 1}, {hosts} hosts: {summary(figures)}", flush=True)
        finally:
            box.close()
            hosts_cpu.close()
            if limit is not None:
                limit.close()
    report(results, args.rounds, args.host_cpu)
    return 0


if __name__ == "__main__":
    run_main(main)
