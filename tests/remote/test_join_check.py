"""A join's check reuses the run's launch check (issue 78): ``corral join`` probes only the
joiner and tests only its links with the run's hosts, at the addresses the launch recorded; the
run's hosts run nothing else. A joiner that cannot reach one of them, or runs another torch, is
refused as before; nothing is pushed. (A record of an older corral: every host is checked,
tests/remote/test_join_match.py.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from console.cli import main
from remote.checks.host_facts import HostFacts
from remote.config.cluster import ClusterConfig
from remote.config.read import load_cluster
from remote.hosts.command_errors import CompletedCommand
from remote.records.runs import local_run_dir
from remote.run.join import read_join_records
from tests.remote.test_join_match import RECORDED
from tests.remote.test_membership_join import RUNNING
from tests.remote.test_membership_leave import _cluster

ADDRESSES = {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}


class StandIn:
    """A host that answers the mesh's listener and connect programs, and counts them."""

    def __init__(self, config: ClusterConfig, name: str, blocked: set[tuple[str, str]],
                 asked: list[tuple[str, str]]) -> None:
        self.host = next(h for h in config.hosts if h.name == name)
        self._blocked, self._asked = blocked, asked

    def stream(self, command: str) -> AsyncIterator[str]:
        self._asked.append((self.host.name, "listen"))

        async def lines() -> AsyncIterator[str]:
            yield json.dumps({"port": 40000 + ord(self.host.name[0])})
        return lines()

    async def run(self, command: str, timeout: float | None = None) -> CompletedCommand:
        peers = [n for n in ADDRESSES if n != self.host.name and json.dumps(n) in command]
        self._asked.append((self.host.name, "connect " + ",".join(peers)))
        reply = {n: ({"ok": False, "error": "timed out"} if (self.host.name, n) in self._blocked
                     else {"ok": True, "bytes": 1e6, "seconds": 0.01, "rtt_s": 1e-4})
                 for n in peers}
        return CompletedCommand(command=command, exit_status=0, stdout=json.dumps(reply),
                                stderr="")


class StandInPool:
    """``HostPool`` over stand-ins: which host was asked what."""

    def __init__(self, config: ClusterConfig, blocked: set[tuple[str, str]]) -> None:
        self.asked: list[tuple[str, str]] = []
        self._hosts = {h.name: StandIn(config, h.name, blocked, self.asked)
                       for h in config.hosts}

    def host(self, name: str) -> object:
        return self._hosts[name].host

    async def get(self, name: str) -> StandIn:
        return self._hosts[name]

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize(("torch", "blocked", "said"), [
    ("2.4.0", set(), "c cannot join: c runs torch 2.4.0"),
    ("2.5.1", {("c", "a")}, "c: mesh: c → a: cannot connect to 10.0.0.1"),
])
def test_a_join_probes_the_joiner_alone_and_tests_only_its_links(
        torch: str, blocked: set[tuple[str, str]], said: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = {**RECORDED, "address": {"a": ADDRESSES["a"], "b": ADDRESSES["b"]},
                "gpus": {"a": 0, "b": 0}}
    path = _cluster(tmp_path, {**RUNNING, "checked": recorded})
    pools: list[StandInPool] = []
    probed: list[str] = []

    def pool_for(config: ClusterConfig) -> StandInPool:
        pools.append(StandInPool(config, blocked))
        return pools[-1]

    async def probe(transport: StandIn, *args: object) -> HostFacts:
        probed.append(transport.host.name)
        return HostFacts(python_ok=True, torch=torch, gpus=0, address=ADDRESSES["c"])

    async def full_check(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run's hosts are not checked again")

    monkeypatch.setattr("remote.run.join.HostPool", pool_for)
    monkeypatch.setattr("remote.run.join.check_and_plan", full_check)
    monkeypatch.setattr("remote.run.join_check.probe_host", probe)
    assert main(["-c", str(path), "join", "c", "--run", "m-1"]) != 0
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert said in text and "Traceback" not in text, text
    assert probed == ["c"]  # only the joiner answers the probes
    # the run's hosts: a listener for the joiner and a connect to it, nothing else
    assert sorted(pools[0].asked) == [("a", "connect c"), ("a", "listen"), ("b", "connect c"),
                                      ("b", "listen"), ("c", "connect a,b"), ("c", "listen")]
    assert read_join_records(local_run_dir(load_cluster(path), "m-1")) == []
    assert not (tmp_path / "work-c").exists()  # nothing pushed
