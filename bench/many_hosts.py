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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import run_main  # noqa: E402
from tests.remote import netns  # noqa: E402

GOAL = 2.0
STEPS = 20
STOP_STEPS = 400
RUN = ('model = "simple_cnn"\ndataset = "synthetic_image"\nsamples = 480\nglobal_batch = 32\n'
       'steps = {steps}\npolicy = "static"\ncheckpoint_every = 0\n')
RUN_PHASES = ("start", "check + push", "launch", "first step", "train", "exit")
"""``corral run``'s phases, each ending at the follower line ``MARKS`` names (or the exit)."""
MARKS = ("checking", "launching", "running", "step", "completed", "exit")
CLEAN_DEADLINE_S = 15.0
TIMEOUT_S = 600.0


def machine_busy() -> tuple[float, float]:
    """The machine's (busy, total) CPU jiffies so far, every core (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])
    return total - values[3] - values[4], total


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HostsCpu:
    """CPU time of everything that runs on the hosts: each host's sshd and all it starts (the
    probes, the launchers, the ranks; setsid does not leave a cgroup) in one cpuacct cgroup of
    its own, removed by ``close``. ``seconds`` is None where cgroup v1's cpuacct is missing."""

    def __init__(self, box: netns.NetnsCluster) -> None:
        self.path: Path | None = Path(f"/sys/fs/cgroup/cpuacct/corral-hosts-{os.getpid()}")
        try:
            self.path.mkdir()
            for node in box.nodes:
                assert node.sshd is not None
                (self.path / "cgroup.procs").write_text(f"{node.sshd.pid}\n")
        except OSError:
            self.close()
            self.path = None

    def seconds(self) -> float | None:
        if self.path is None:
            return None
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def close(self) -> None:
        """Remove the cgroup once the box's killed processes have left it."""
        if self.path is not None:
            remove_when_empty([self.path])


def remove_when_empty(paths: Sequence[Path]) -> None:
    """Remove the cgroups ``paths``, children before their parent, each once it is empty (a
    process dies a moment after its SIGKILL); one line names any left after the deadline."""
    deadline = time.monotonic() + CLEAN_DEADLINE_S
    for path in paths:
        while path.exists():
            try:
                path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    print(f"left behind: {path} (not empty)", file=sys.stderr)
                    break
                time.sleep(0.1)  # polling a condition with a deadline


def cpu_cgroup_root() -> tuple[Path, bool]:
    """Where per-host CPU limits go, and whether it is cgroup v2: the v2 hierarchy that offers
    the cpu controller (``cpu.max``), else cgroup v1's cpu controller (``cpu.cfs_quota_us``:
    the same CFS bandwidth limit), else an OSError saying neither is there."""
    for v2 in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        controllers = v2 / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            return v2, True
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        return v1, False
    raise OSError("no cgroup cpu controller: neither cgroup v2's cpu.max nor v1's "
                  "cpu.cfs_quota_us under /sys/fs/cgroup")


class HostsCpuLimit:
    """Every host the same CPU share, ``cores`` of a core (``--host-cpu``): each host's sshd,
    and so all it starts, in a cgroup of its own whose CFS bandwidth quota is ``cores`` x the
    period, whatever the host count, as on machines of their own. cgroup v2's ``cpu.max``
    (``+cpu`` enabled in the parents' ``cgroup.subtree_control``), or v1's
    ``cpu.cfs_quota_us`` where the cpu controller is v1's; a separate hierarchy from
    ``HostsCpu``'s cpuacct, which keeps counting. The hosts' parent cgroup weighs as much as
    one task per host against the machine's other work (a cgroup's default weight is one
    task's: all the hosts together would get one task's share of a busy machine, far less
    than their quotas at 16 hosts, more nearly enough at 2). Removed by ``close``."""

    PERIOD_US = 10_000
    """A short period (the default is 100 ms), so that a host's share comes in slices of a
    millisecond or so, as from a slower core, not as one 12.5 ms burst per 100 ms: an SSH
    handshake's round trips would each wait out the rest of a long period."""
    LEAST_QUOTA_US = 1000
    """The kernel's least quota; the period grows for a share below it."""

    def __init__(self, box: netns.NetnsCluster, cores: float) -> None:
        root, self.v2 = cpu_cgroup_root()
        self.parent = root / f"corral-hosts-{os.getpid()}"
        self.children: list[Path] = []
        period = max(self.PERIOD_US, math.ceil(self.LEAST_QUOTA_US / cores))
        quota = round(cores * period)
        hosts = len(box.nodes)
        try:
            self.parent.mkdir()
            if self.v2:
                for level in (root, self.parent):
                    (level / "cgroup.subtree_control").write_text("+cpu\n")
                (self.parent / "cpu.weight").write_text(f"{min(10_000, 100 * hosts)}\n")
            else:
                (self.parent / "cpu.shares").write_text(f"{1024 * hosts}\n")
            for node in box.nodes:
                assert node.sshd is not None
                child = self.parent / node.name
                child.mkdir()
                self.children.append(child)
                if self.v2:
                    (child / "cpu.max").write_text(f"{quota} {period}\n")
                else:
                    (child / "cpu.cfs_period_us").write_text(f"{period}\n")
                    (child / "cpu.cfs_quota_us").write_text(f"{quota}\n")
                (child / "cgroup.procs").write_text(f"{node.sshd.pid}\n")
        except OSError:
            self.close()
            raise

    def describe(self) -> str:
        return "cgroup v2 cpu.max" if self.v2 else "cgroup v1 cpu.cfs_quota_us"

    def close(self) -> None:
        """Remove the hosts' cgroups once the box's killed processes have left them."""
        remove_when_empty([*self.children, self.parent])


@dataclass(frozen=True)
class Reading:
    """The clocks at one moment: wall, the machine's CPU jiffies, the hosts' CPU seconds."""

    t: float
    busy: tuple[float, float]
    hosts_s: float | None

    @classmethod
    def now(cls, hosts: HostsCpu) -> Reading:
        return cls(time.perf_counter(), machine_busy(), hosts.seconds())


def between(a: Reading, b: Reading) -> dict[str, float]:
    """Wall seconds, the machine's busy fraction (1.0: every core) and the hosts' CPU seconds
    (NaN without the cgroup) from ``a`` to ``b``."""
    busy = (b.busy[0] - a.busy[0]) / max(1.0, b.busy[1] - a.busy[1])
    hosts = (b.hosts_s - a.hosts_s if a.hosts_s is not None and b.hosts_s is not None
             else float("nan"))
    return {"wall": b.t - a.t, "busy": busy, "hosts cpu": hosts}


@dataclass
class Followed:
    """What one ``corral run`` printed, and when."""

    run_id: str = ""
    at: dict[str, Reading] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    code: int | None = None
    cpu_total_s: float = 0.0


def mark_of(line: str) -> str | None:
    """Which of ``MARKS`` a follower line is (``run R: STATE``, ``step N/T ...``), if any."""
    if line.startswith("step "):
        return "step"
    if line.startswith("run ") and ": " in line:
        state = line.split(": ", 2)[1].split()[0]
        return state if state in MARKS else None
    return None


def follow(box: netns.NetnsCluster, hosts: HostsCpu, *args: str,
           on_mark: Callable[[str, Followed], None] | None = None) -> Followed:
    """Run ``corral ARGS`` to its end, reading the clocks at each of the follower's marks as
    the lines arrive; the process's own CPU at each mark and in all (its rusage once reaped:
    nothing else is reaped meanwhile)."""
    seen = Followed()
    before = os.times()
    seen.at["begin"] = Reading.now(hosts)
    proc = netns.corral_process(box, *args)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.lines.append(line)
            mark = mark_of(line)
            if mark is None or mark in seen.at:
                continue
            seen.at[mark] = Reading.now(hosts)
            seen.cpu[mark] = process_cpu_s(proc.pid)
            if mark == "checking":
                seen.run_id = line.split(":", 1)[0].removeprefix("run ")
            if on_mark is not None:
                on_mark(mark, seen)
        seen.code = proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seen.at["exit"] = Reading.now(hosts)
    after = os.times()
    seen.cpu_total_s = (after.children_user - before.children_user
                        + after.children_system - before.children_system)
    return seen


def run_processes(box: netns.NetnsCluster, run_id: str) -> list[str]:
    """``HOST: PID COMMAND`` of each process of the run (a launcher or a rank: its command
    line carries ``--run-dir`` and ``run_id``) in a host's namespace. The follower's tailers
    also name the run directory; they end with the follower (``wait_empty``)."""
    found = []
    for node, pids in box.processes_left().items():
        for pid in pids:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if run_id in argv and "--run-dir" in argv:
                found.append(f"{node}: {pid} {argv[:300]}")
    return found


def wait_empty(box: netns.NetnsCluster) -> dict[str, list[int]]:
    """The processes left in the hosts' namespaces (sshd's listener aside) once they are gone
    or ``CLEAN_DEADLINE_S`` has passed (sshd's per-session processes take a moment)."""
    deadline = time.monotonic() + CLEAN_DEADLINE_S
    while (left := box.processes_left()) and time.monotonic() < deadline:
        time.sleep(0.2)  # polling a condition with a deadline
    return left


def write_cluster(box: netns.NetnsCluster, hosts: int, steps: int) -> None:
    box.write_cluster_toml(sys.executable, run=RUN.format(steps=steps),
                           order=[f"n{i}" for i in range(1, hosts + 1)])


def timed(box: netns.NetnsCluster, hosts: HostsCpu,
          *args: str) -> tuple[dict[str, float], subprocess.CompletedProcess[str]]:
    """``corral ARGS`` run to its end: ``between`` its start and end, and its output."""
    began = Reading.now(hosts)
    done = netns.corral(box, *args, timeout=TIMEOUT_S)
    return between(began, Reading.now(hosts)), done


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
