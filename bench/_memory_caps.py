"""Memory caps per emulated host: each host's ranks in a memory cgroup of their own, as on a
machine with that much memory (root only).

cgroup v2: a child of the root of the unified hierarchy with ``memory.max`` (and
``memory.swap.max = 0``); cgroup v1: a child of this process's own memory cgroup with
``memory.limit_in_bytes`` (the memory controller's hierarchy, so the parent's limit holds too).
A process is put in one before it runs anything (``Popen(preexec_fn=cap.enter)``): all it
allocates, the import of torch included, is charged there. Over the limit the kernel's OOM
killer ends it (SIGKILL) and the cgroup counts it (``oom_kills``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ROOT = Path("/sys/fs/cgroup")
LEAVE_S = 30.0
"""How long a killed process may take to leave its cgroup before the cgroup is removed."""


def _own_v1() -> Path | None:
    """This process's cgroup v1 memory folder (None: no v1 memory controller)."""
    for entry in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = entry.split(":", 2)
        if "memory" in controllers.split(","):
            folder = ROOT / "memory" / path.lstrip("/")
            return folder if (folder / "memory.limit_in_bytes").exists() else None
    return None


def why_not() -> str | None:
    """Why memory caps cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "memory caps need root (cgroups)"
    unified = ROOT / "cgroup.controllers"
    if unified.exists() and "memory" in unified.read_text().split():
        return None
    if _own_v1() is None:
        return "no cgroup memory controller (v2 memory.max or v1 memory.limit_in_bytes)"
    return None


class MemoryCap:
    """One host's memory cgroup of ``limit`` bytes, removed by ``close``."""

    def __init__(self, name: str, limit: int) -> None:
        self.v2 = (ROOT / "cgroup.controllers").exists()
        parent = ROOT if self.v2 else _own_v1()
        if parent is None:
            raise OSError(why_not() or "no memory cgroup")
        self.path = parent / f"corral-mem-{os.getpid()}-{name}"
        self.path.mkdir()
        self.limit = limit
        if self.v2:
            (self.path / "memory.max").write_text(f"{limit}\n")
            swap = self.path / "memory.swap.max"
            if swap.exists():
                swap.write_text("0\n")
        else:
            (self.path / "memory.limit_in_bytes").write_text(f"{limit}\n")

    def enter(self) -> None:
        """Put the calling process in the cgroup (a ``preexec_fn``: in the child, before
        ``exec``)."""
        (self.path / "cgroup.procs").write_text(f"{os.getpid()}\n")

    def oom_kills(self) -> int:
        """Processes the OOM killer ended in the cgroup."""
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak(self) -> int | None:
        """The most bytes charged to the cgroup (None where the kernel does not say)."""
        peak = self.path / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes")
        return int(peak.read_text()) if peak.exists() else None

    def close(self) -> None:
        """Remove the cgroup once every process has left it (they have ended)."""
        deadline = time.monotonic() + LEAVE_S
        while self.path.exists():
            try:
                self.path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # a killed process still leaving: polled with a deadline


def run_ranks(specs: list[dict[str, Any]], caps: list[MemoryCap | None],
              timeout_s: float, logs: Path | None = None, repo: Path = REPO) -> list[int]:
    """``python -m bench._capped_rank SPEC`` per spec, from checkout ``repo`` (this one unless
    given), rank i in ``caps[i]`` (None: uncapped),
    each in a session of its own, its output into ``logs/rank-i.log`` (None: this process's);
    once one fails the others (waiting on it in a collective) are ended, as they are at
    ``timeout_s``. Every rank's return code (-9: killed, by the OOM killer or here)."""
    procs = []
    for i, (spec, cap) in enumerate(zip(specs, caps, strict=True)):
        log = None if logs is None else (logs / f"rank-{i}.log").open("w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bench._capped_rank", json.dumps(spec)], cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)}, start_new_session=True,
            stdout=log, stderr=log, preexec_fn=cap.enter if cap is not None else None))
        if log is not None:
            log.close()  # the rank holds its own copy
    deadline = time.monotonic() + timeout_s
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline or any(p.returncode not in (None, 0) for p in procs):
                break
            time.sleep(0.2)  # polled with a deadline: the ranks are ours, ended below
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return [p.returncode for p in procs]
