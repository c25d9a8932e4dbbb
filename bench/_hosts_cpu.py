"""The clocks of bench/many_hosts.py: wall time, the machine's CPU use, and the hosts' CPU in
cgroups, counted (``HostsCpu``) or limited to a share per host (``HostsCpuLimit``, which
bench/links.py and bench/lowcomm_shaped.py give their hosts too).

A host of the cluster in a box (``tests/remote/netns.py``) is its sshd and all it starts, so a
cgroup that holds a host's sshd holds everything that runs on the host. Every cgroup made here
is removed by the ``close`` methods, once the box's killed processes have left it.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.remote import netns

CLEAN_DEADLINE_S = 15.0
"""How long killed processes may take to leave a cgroup or a host's namespace."""


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


@dataclass(frozen=True)
class HostCpuReading:
    """Each host's CPU clocks at one moment (hosts in the box's order)."""

    t: float
    """``time.time()``: the clock of the runs' events, so a run's window can be cut from it."""
    used_s: tuple[float, ...]
    """CPU seconds of everything on the host so far (its sshd and all it starts)."""
    periods: tuple[int, ...]
    """CFS periods the host ran in so far (its quota's ``nr_periods``; 0 without a quota)."""
    throttled: tuple[int, ...]
    """Of those, the periods its quota ran out in (``nr_throttled``)."""


class HostsCpuEach:
    """Each host's CPU seconds and its quota's throttling, for ``HostsCpuLimit``'s hosts:
    cgroup v2 reads the limit's own cgroups (``cpu.stat``: ``usage_usec``, ``nr_periods``,
    ``nr_throttled``); v1 counts CPU in a cpuacct cgroup per host made here (v1's cpu.stat
    has the throttling only). Not with ``HostsCpu``, which holds every sshd in one cpuacct
    cgroup. Removed by ``close``."""

    def __init__(self, box: netns.NetnsCluster, limit: HostsCpuLimit) -> None:
        self.limit = limit
        self.parent: Path | None = None
        self.counters = list(limit.children)
        if not limit.v2:
            self.parent = Path(f"/sys/fs/cgroup/cpuacct/corral-each-{os.getpid()}")
            self.counters = []
            try:
                self.parent.mkdir()
                for node in box.nodes:
                    assert node.sshd is not None
                    child = self.parent / node.name
                    child.mkdir()
                    self.counters.append(child)
                    (child / "cgroup.procs").write_text(f"{node.sshd.pid}\n")
            except OSError:
                self.close()
                raise

    def read(self) -> HostCpuReading:
        stats = [_stat(path / "cpu.stat") for path in self.limit.children]
        if self.parent is None:
            used = tuple(s.get("usage_usec", 0) / 1e6 for s in stats)
        else:
            used = tuple(int((path / "cpuacct.usage").read_text()) / 1e9
                         for path in self.counters)
        return HostCpuReading(t=time.time(), used_s=used,
                              periods=tuple(s.get("nr_periods", 0) for s in stats),
                              throttled=tuple(s.get("nr_throttled", 0) for s in stats))

    def close(self) -> None:
        """Remove the per-host cpuacct cgroups (v1) once the box's processes have left them."""
        if self.parent is not None:
            remove_when_empty([*self.counters, self.parent])


def _stat(path: Path) -> dict[str, int]:
    """A cgroup's ``cpu.stat`` as numbers by name."""
    return {key: int(value) for key, value in
            (line.split() for line in path.read_text().splitlines() if line.strip())}
