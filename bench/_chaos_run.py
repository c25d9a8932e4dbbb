"""The run a chaos run (bench/chaos.py) drives: ``corral run`` of a live-membership run on the
network-namespace hosts of tests/remote/netns.py over their real sshd, followed by a process
of its own (``corral run``, later ``corral attach --headless`` or ``corral run --resume``),
and what the invariants read of it: its record, rank 0's events, each host's processes.

Every wait is a condition polled against a deadline; nothing waits on time alone.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
for _folder in (REPO / "tests", REPO / "tests" / "remote", REPO / "tests" / "trainer"):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

import netns  # noqa: E402  (tests/remote/netns.py: the cluster in a box)

from bench._chaos_checks import ENDED, last_step  # noqa: E402

WORKERS = ("n2", "n3")
"""The hosts faults take out and bring back (n1 is the master)."""
STEPS = 1_000_000
"""More steps than any chaos run trains: it ends only by its last stop."""
RUN = ('samples = 256\nglobal_batch = 32\nseed = 7\nlr = 0.02\nmomentum = 0.9\n'
       f'steps = {STEPS}\ncheckpoint_every = 50\npolicy = "static"\n'
       'on_host_loss = "continue"\n')
"""A live-membership run whose parameters do not depend on its hosts (the same global batch,
a constant learning rate): the replay is one process of as many steps. A checkpoint every 50
steps: a run that failed is resumed from one (a stop writes its own)."""
SLOWDOWN = 8.0
"""An emulated slowdown (it changes no number): steps of a few tenths of a second, so that a
fault lands mid-run and the replay is short."""
WAIT_S = 240.0
"""The longest any one wait lasts (a corral command, a change landing, a step)."""


class Broken(Exception):
    """A wait whose condition did not come within its deadline: an invariant broken."""


@dataclass
class ChaosRun:
    """One run on ``box``, and the process following it."""

    box: netns.NetnsCluster
    log: Path
    run_id: str = ""
    follower: subprocess.Popen[str] | None = None
    _out: IO[str] | None = field(default=None, repr=False)

    @property
    def run_root(self) -> Path:
        return self.box.root / "runs"

    @property
    def run_dir(self) -> Path:
        return self.run_root / self.run_id

    def write_config(self) -> Path:
        lines = {node.name: f"slowdown = {SLOWDOWN}\n" for node in self.box.nodes}
        return self.box.write_cluster_toml(sys.executable, run=RUN, host_lines=lines)

    def corral(self, *args: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess[str]:
        """``corral ARGS`` from the controller's namespace, to its end."""
        done = netns.corral(self.box, *args, timeout=timeout)
        with self.log.open("a") as out:
            out.write(f"\n$ corral {' '.join(args)} -> {done.returncode}\n{done.stdout}"
                      f"{done.stderr}")
        return done

    def follow(self, *args: str) -> None:
        """Start ``corral ARGS`` as the run's follower, its output appended to the log."""
        argv, env = netns.corral_command(self.box, *args)
        self._out = self.log.open("a")
        self._out.write(f"\n$ corral {' '.join(args)} (following)\n")
        self._out.flush()
        self.follower = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT,
                                         text=True, cwd=netns.REPO, env=env)

    def start(self) -> None:
        """``corral run``; returns once the run has trained its first steps."""
        before = set(self.run_root.glob("*/")) if self.run_root.exists() else set()
        self.follow("run")
        self.wait("the run's record", lambda: bool(set(self.run_root.glob("*/run.json"))
                                                    - {d / "run.json" for d in before}))
        (record,) = set(self.run_root.glob("*/run.json")) - {d / "run.json" for d in before}
        self.run_id = record.parent.name
        self.wait_steps(1)

    def record(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.run_dir / "run.json").read_text()))
        except (OSError, ValueError):
            return {}

    def ended(self) -> bool:
        return self.record().get("state") in ENDED

    def step(self) -> int:
        return last_step(self.run_dir)

    def wait(self, what: str, condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
        """Poll ``condition`` until it holds; Broken after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise Broken(f"{what}: not within {timeout:.0f} s")
            time.sleep(0.25)  # polling the run's files and processes, with a deadline

    def wait_steps(self, steps: int, *, since: int | None = None) -> int:
        """Wait until rank 0 completed ``steps`` steps past ``since`` (default: now), or the
        run ended; the step reached."""
        start = self.step() if since is None else since
        self.wait(f"{steps} step(s) past step {start}",
                  lambda: self.step() >= start + steps or self.ended())
        return self.step()

    def processes(self) -> dict[str, list[int]]:
        """Per host: the pids in its namespace whose command line carries the run id."""
        found: dict[str, list[int]] = {}
        by_netns = {node.netns: node.name for node in self.box.nodes}
        for netns_name, host in by_netns.items():
            listed = subprocess.run(["ip", "netns", "pids", netns_name], capture_output=True,
                                    text=True).stdout.split()
            found[host] = [int(pid) for pid in listed
                           if self.run_id and self.run_id in _cmdline(int(pid))]
        return found

    def pids(self, host: str, what: str) -> list[int]:
        """The run's ``launcher`` or ``rank`` processes on ``host``."""
        module = "trainer.launcher" if what == "launcher" else "-m trainer --run-dir"
        return [pid for pid in self.processes().get(host, []) if module in _cmdline(pid)]

    def kill_follower(self) -> None:
        """SIGKILL the process following the run (as a closed laptop lid would end it)."""
        if self.follower is not None and self.follower.poll() is None:
            self.follower.send_signal(signal.SIGKILL)
            self.follower.wait(timeout=WAIT_S)

    def wait_follower(self) -> int:
        """The follower's exit status once it ended (Broken after ``WAIT_S``)."""
        assert self.follower is not None
        try:
            return self.follower.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            raise Broken(f"the follower did not end within {WAIT_S:.0f} s") from None

    def close(self) -> None:
        """Stop what is left (the run, its follower); the box is closed by its owner."""
        if self.run_id and not self.ended():
            self.corral("stop", self.run_id, "--grace", "3", timeout=120)
        self.kill_follower()
        if self._out is not None:
            self._out.close()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""
