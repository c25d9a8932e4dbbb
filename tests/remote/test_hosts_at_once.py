"""The check, the launch and the stop work on every host at once: with 16 hosts, no host's
command waits for another host's to end (bench/many_hosts.py times the real thing over sshd).

Each host's first command of a phase is held until every host has one in flight; work done one
host after another never gets there, and the hold's deadline names the hosts that waited.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from remote.checks.plan import LaunchFacts, plan_cluster
from remote.checks.preflight import check_cluster
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection, SshSection
from remote.hosts import pool as pool_module
from remote.hosts.command_errors import CompletedCommand
from remote.hosts.pool import HostPool
from remote.hosts.push import CodeBundle
from remote.records.runs import RunInfo
from remote.run.start import Launch, start_hosts
from remote.run.stop import stop_run

HOSTS = 16
HOLD_DEADLINE_S = 10.0
"""How long a host's first command waits for the others' (only reached when work is serial)."""


class Meeting:
    """Each host's first command waits here until every host has one in flight."""

    def __init__(self, hosts: int) -> None:
        self.hosts = hosts
        self.arrived: set[str] = set()
        self.everyone = asyncio.Event()
        self.gave_up: list[str] = []
        """Hosts whose wait ran out: their command started while another host's had not."""

    async def arrive(self, host: str) -> None:
        if host in self.arrived:
            return
        self.arrived.add(host)
        if len(self.arrived) == self.hosts:
            self.everyone.set()
        try:
            await asyncio.wait_for(self.everyone.wait(), HOLD_DEADLINE_S)
        except TimeoutError:
            self.gave_up.append(host)
            self.everyone.set()  # one wait that ran out is enough to fail; release the rest


class HeldTransport:
    """A host that answers every command with "remaining 0" (a stop's count) and a process
    group id (a launch's) once its first command has met every other host's."""

    def __init__(self, host: HostSection, meeting: Meeting) -> None:
        self.host = host
        self.meeting = meeting

    async def run(self, command: str, **_: Any) -> CompletedCommand:
        await self.meeting.arrive(self.host.name)
        return CompletedCommand(command=command, exit_status=0, stdout="remaining 0\n4242\n",
                                stderr="")

    async def stream(self, command: str) -> AsyncIterator[str]:
        await self.meeting.arrive(self.host.name)
        return
        yield  # an async generator that ends without a line

    async def close(self) -> None:
        return None


def cluster(tmp_path: Path) -> ClusterConfig:
    hosts = tuple(HostSection(name=f"h{i}", address=f"10.9.0.{i + 1}", user="u",
                              python="python3", workdir="/tmp/w", gpus=0, nproc=1)
                  for i in range(HOSTS))
    return ClusterConfig(
        path=tmp_path / "cluster.toml",
        cluster=ClusterSection(name="wide", master="h0", run_root=str(tmp_path / "runs")),
        hosts=hosts, run=RunSection(),
        ssh=SshSection(known_hosts_file=str(tmp_path / "known_hosts"),
                       config_file=str(tmp_path / "no-ssh-config")))


@pytest.fixture
def meeting(monkeypatch: pytest.MonkeyPatch) -> Meeting:
    """Every connection of a ``HostPool`` is a ``HeldTransport`` meeting here."""
    held = Meeting(HOSTS)

    async def connect(host: HostSection, ssh: SshSection) -> None:
        return None

    monkeypatch.setattr(pool_module, "connect", connect)
    monkeypatch.setattr(pool_module, "SshTransport",
                        lambda host, conn: HeldTransport(host, held))
    return held


def test_the_check_probes_every_host_at_once(tmp_path: Path, meeting: Meeting) -> None:
    config = cluster(tmp_path)

    async def check() -> None:
        pool = HostPool(config)
        try:
            await check_cluster(config, pool)
        finally:
            await pool.aclose()

    asyncio.run(check())
    assert meeting.arrived == {h.name for h in config.hosts}
    assert meeting.gave_up == []


def test_the_stop_reaches_every_host_at_once(tmp_path: Path, meeting: Meeting) -> None:
    config = cluster(tmp_path)

    async def stop() -> None:
        pool = HostPool(config)
        try:
            report = await stop_run(pool, str(tmp_path / "runs" / "r1"), "r1", grace_s=1.0)
        finally:
            await pool.aclose()
        assert report.unreachable == ()
        assert set(report.remaining) == {h.name for h in config.hosts}

    asyncio.run(stop())
    assert meeting.gave_up == []


def test_the_launch_starts_every_host_at_once(tmp_path: Path, meeting: Meeting) -> None:
    config = cluster(tmp_path)
    names = tuple(h.name for h in config.hosts)
    facts = LaunchFacts(gpus=dict.fromkeys(names, 0), interfaces={}, port=29500)
    places = {p.host.name: p for p in plan_cluster(config, facts, "10.9.0.1").hosts}

    async def launch() -> list[object]:
        pool = HostPool(config)
        started = Launch(pool=pool, config=config,
                         info=RunInfo(run_id="wide-1", cluster="wide", state="launching",
                                      started=0.0, hosts=names),
                         master_addr="10.9.0.1", code=CodeBundle(digest="d" * 64, tar=b"",
                                                                 files=0),
                         facts=facts, port=29500, places=places, backend="gloo")
        try:
            return [e async for e in start_hosts(started, resume=False, policy=None)]
        finally:
            await pool.aclose()

    events = asyncio.run(launch())
    assert meeting.arrived == set(names)
    assert meeting.gave_up == []
    assert "wide-1" in str(events[-1]) and "h15 pgid 4242" in str(events[-1])
