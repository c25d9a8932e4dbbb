"""Helpers for live-membership tests: ranks of one run on several local "hosts" (a process per
rank, each told its host's name as corral's launch tells it), sharing the run's membership store
as a launch with ``CORRAL_MEMBERSHIP_PORT`` does (trainer/membership/)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spawn_ranks import free_port
from trainer_runs import REPO, rank_env, trainer_args

from trainer.launch_contract import HOST_ENV
from trainer.membership.contract import JOIN_ENV, MEMBERSHIP_PORT_ENV
from trainer.run_layout import RunLayout


@dataclass(frozen=True)
class Place:
    """Where a host's ranks run: a network namespace and the interface gloo uses there."""

    netns: str
    ifname: str


@dataclass
class LiveRun:
    """A run's ranks, started one process per rank on named local hosts."""

    run_dir: Path
    flags: tuple[str, ...]
    hosts: tuple[str, ...]
    """The host of each launched rank, by rank."""
    ranks: list[subprocess.Popen[bytes]] = field(default_factory=list)
    joiners: list[subprocess.Popen[bytes]] = field(default_factory=list)
    killed: list[subprocess.Popen[bytes]] = field(default_factory=list)
    master_port: int = field(default_factory=free_port)
    store_port: int = field(default_factory=free_port)
    places: dict[str, Place] = field(default_factory=dict)
    """Hosts whose ranks run in a network namespace (others: this machine's, on loopback)."""
    master_addr: str = "127.0.0.1"

    def _env(self, host: str, rank: int, world: int) -> dict[str, str]:
        env = rank_env()
        env.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": "0",
                    "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": self.master_addr,
                    "MASTER_PORT": str(self.master_port),
                    MEMBERSHIP_PORT_ENV: str(self.store_port), HOST_ENV: host})
        if host in self.places:
            env["GLOO_SOCKET_IFNAME"] = self.places[host].ifname
        return env

    def _start(self, env: dict[str, str], flags: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        args = trainer_args(*self.flags, *flags, "--run-dir", str(self.run_dir))
        place = self.places.get(env[HOST_ENV])
        inside = ["ip", "netns", "exec", place.netns] if place else []  # it execs: same pid
        with open(self.run_dir / f"out-{len(self.ranks) + len(self.joiners)}.log", "wb") as log:
            return subprocess.Popen([*inside, sys.executable, *args], cwd=REPO, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for rank, host in enumerate(self.hosts):
            self.ranks.append(self._start(self._env(host, rank, len(self.hosts))))

    def join(self, host: str, *flags: str) -> subprocess.Popen[bytes]:
        """A joiner's rank on ``host``: its own launch (world of one), the run's store, the
        run's flags (then ``flags``)."""
        env = self._env(host, 0, 1)
        env.update({JOIN_ENV: "0", "MASTER_PORT": str(free_port())})
        proc = self._start(env, flags)
        self.joiners.append(proc)
        return proc

    def ask_leave(self, host: str) -> None:
        path = Path(RunLayout(self.run_dir).leave_request(host))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def events(self, member: int) -> list[dict[str, Any]]:
        path = Path(RunLayout(self.run_dir).events(member))
        if not path.exists():
            return []
        # The last piece after the final newline is a line the rank is still writing.
        whole = path.read_text().split("\n")[:-1]
        return [json.loads(line) for line in whole if line.strip()]

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 180) -> None:
        """Poll ``condition`` until it holds (a condition with a deadline, not a sleep as
        synchronisation); fail naming ``what`` and the ranks' output when it does not."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s\n{self.output()}"
            assert all(p.poll() in (None, 0) for p in self.ranks
                       if p not in self.killed), f"{what}: a rank failed\n{self.output()}"
            time.sleep(0.05)

    def kill(self, rank: int) -> None:
        self.ranks[rank].send_signal(signal.SIGKILL)
        self.killed.append(self.ranks[rank])

    def kill_process(self, proc: subprocess.Popen[bytes], signum: int = signal.SIGKILL) -> None:
        """Send ``signum`` to one of the run's processes; it counts as killed (a stopped one
        too: it never ends on its own)."""
        proc.send_signal(signum)
        if proc not in self.killed:
            self.killed.append(proc)

    def steps_done(self, member: int = 0) -> int:
        return max((e["step"] for e in self.events(member) if e["event"] == "step"), default=0)

    def membership(self) -> list[dict[str, Any]]:
        return [e for e in self.events(0) if e["event"] == "membership"]

    def finish(self, timeout: float = 300,
               expect_failed: Sequence[subprocess.Popen[bytes]] = ()) -> None:
        """Wait for every rank; each neither killed nor in ``expect_failed`` must exit 0, and
        each in ``expect_failed`` must not."""
        deadline = time.monotonic() + timeout
        for proc in self.ranks + self.joiners:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        codes = [p.returncode for p in self.ranks + self.joiners
                 if p not in self.killed and p not in expect_failed]
        assert codes == [0] * len(codes), f"exit codes {codes}\n{self.output()}"
        assert all(p.returncode != 0 for p in expect_failed), self.output()

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:]
                         for p in sorted(self.run_dir.glob("out-*.log")))

    def stop_all(self) -> None:
        for proc in self.ranks + self.joiners:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


DDP_SCRIPT = Path(__file__).with_name("ddp_live_script.py")
"""A user's DDP script with corral's helper (tests/trainer/scenarios/test_ddp_live.py, the
bench)."""


@dataclass
class ScriptRanks(LiveRun):
    """A ``LiveRun`` whose ranks run the user's script through corral's ``script_main``, each
    in its host's own working directory (``cwd/<host>``), as corral's launch starts them
    (``script``: the DDP-helper script unless given)."""

    script: Path = field(default_factory=lambda: DDP_SCRIPT)
    env: dict[str, str] = field(default_factory=dict)
    """More of every rank's environment (``CORRAL_SLOWDOWN``, say)."""

    def _start(self, env: dict[str, str], flags: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        host = env[HOST_ENV]
        env = {**env, "CORRAL_BACKEND": "gloo", "CORRAL_DEVICE": "cpu", **self.env}
        with open(self.run_dir / f"out-{len(self.ranks) + len(self.joiners)}.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "trainer.integrations.script_main", "--run-dir",
                 str(self.run_dir), "--cwd", str(self.run_dir / "cwd" / host), str(self.script),
                 *self.flags, *flags], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


CUT_OFF_FLAGS = ("--samples", "256", "--global-batch", "24", "--steps", "5000", "--seed", "7",
                 "--lr", "0.02", "--checkpoint-every", "0", "--slowdown", "3")
"""A long three-host run, slowed: a host cut off mid-run is taken out well before its end."""


def cut_off_run(run_dir: Path, box: Any) -> Any:
    """``live_run`` of ``CUT_OFF_FLAGS`` on the network-namespace ``box``'s three nodes
    (h0..h2, the master on the first), for tests that cut h2 off mid-run."""
    n1, n2, n3 = box.nodes
    places = {"h0": Place(n1.netns, n1.ifname), "h1": Place(n2.netns, n2.ifname),
              "h2": Place(n3.netns, n3.ifname)}
    return live_run(run_dir, CUT_OFF_FLAGS, ("h0", "h1", "h2"), places, master_addr=n1.address)


@contextmanager
def live_run(run_dir: Path, flags: Sequence[str], hosts: Sequence[str],
             places: dict[str, Place] | None = None, master_addr: str = "127.0.0.1"
             ) -> Iterator[LiveRun]:
    """A started ``LiveRun``; every rank still running at the end is killed (none left)."""
    run = LiveRun(run_dir, tuple(flags), tuple(hosts), places=dict(places or {}),
                  master_addr=master_addr)
    try:
        run.start()
        yield run
    finally:
        run.stop_all()


def pid_of(events: list[dict[str, Any]]) -> list[int]:
    """The pid of each ``start`` event (one per process that started as this member)."""
    return [e["pid"] for e in events if e["event"] == "start"]



def schedule_of(rounds: list[dict[str, Any]], hosts: Sequence[str]) -> str:
    """The ``--island-schedule`` of a live run's ``round`` events: an entry where the islands
    change, island ``i`` being ``hosts[i]`` (the replay runs them all from the start)."""
    entries, last = [], ""
    for event in rounds:
        islands = ",".join(("~" if h in event["dropped"] else "") + str(hosts.index(h))
                           for h in event["island_hosts"])
        if islands != last:
            entries.append(f"{event['first_step'] - 1}:{islands}")
            last = islands
    return ";".join(entries)
