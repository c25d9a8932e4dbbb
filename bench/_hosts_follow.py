"""One ``corral`` command of bench/many_hosts.py, run from the controller's namespace and
timed: ``follow`` reads the clocks (``bench/_hosts_cpu.py``) at each line the headless follower
prints as it arrives, ``timed`` at the command's start and end; and what a run leaves behind in
the hosts' namespaces.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench._hosts_cpu import CLEAN_DEADLINE_S, HostsCpu, Reading, between, process_cpu_s
from tests.remote import netns

RUN_PHASES = ("start", "check + push", "launch", "first step", "train", "exit")
"""``corral run``'s phases, each ending at the follower line ``MARKS`` names (or the exit)."""
MARKS = ("checking", "launching", "running", "step", "completed", "exit")
TIMEOUT_S = 600.0


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


def timed(box: netns.NetnsCluster, hosts: HostsCpu,
          *args: str) -> tuple[dict[str, float], subprocess.CompletedProcess[str]]:
    """``corral ARGS`` run to its end: ``between`` its start and end, and its output."""
    began = Reading.now(hosts)
    done = netns.corral(box, *args, timeout=TIMEOUT_S)
    return between(began, Reading.now(hosts)), done
