"""A join's check reuses the run's launch check (issue 78): ``corral join`` probes only the
joiner and tests only its links with the run's hosts, at the addresses the launch recorded; the
run's hosts run nothing else. A joiner that cannot reach one of them, or runs another torch, is
refused as before; nothing is pushed. (A record of an older corral: every host is checked,
tests/remote/test_join_match.py.)"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from console.cli import main
from remote.checks.host_facts import HostFacts
from remote.checks.plan import LaunchFacts
from remote.config.cluster import ClusterConfig
from remote.config.read import load_cluster
from remote.hosts.command_errors import CompletedCommand
from remote.hosts.cpu_placement import HostCpuFacts
from remote.records.runs import RunInfo, local_run_dir, read_run_info
from remote.run.join import read_join_records
from remote.run.join_check import recorded_addresses, recorded_facts
from remote.run.join_match import launch_checked
from tests.remote.test_join_match import RECORDED, _place
from tests.remote.test_membership_join import RUNNING
from tests.remote.test_membership_leave import _cluster

ADDRESSES = {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3", "d": "10.0.0.4"}


class StandIn:
    """A host that answers the mesh's listener and connect programs, and counts them."""

    def __init__(self, config: ClusterConfig, name: str, blocked: set[tuple[str, str]],
                 asked: list[tuple[str, str]]) -> None:
        self.host = next(h for h in config.hosts if h.name == name)
        self._names = [h.name for h in config.hosts]
        self._blocked, self._asked = blocked, asked

    def stream(self, command: str) -> AsyncIterator[str]:
        self._asked.append((self.host.name, "listen"))

        async def lines() -> AsyncIterator[str]:
            yield json.dumps({"port": 40000 + ord(self.host.name[0])})
        return lines()

    async def run(self, command: str, timeout: float | None = None) -> CompletedCommand:
        peers = [n for n in self._names if n != self.host.name and json.dumps(n) in command]
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


def test_a_launch_records_what_a_join_takes_instead_of_probing_the_runs_hosts() -> None:
    places = {h: _place(h) for h in ("a", "b")}
    facts = LaunchFacts(gpus={"a": 2, "b": None}, interfaces={}, port=1,
                        cpu={"a": HostCpuFacts(boot_id="x", cpus=frozenset({0, 1}))},
                        addresses={"a": "10.0.0.1", "b": "10.0.0.2", "z": "10.0.0.9"})
    checked = launch_checked({}, places, "gloo", facts)
    assert checked["address"] == {"a": "10.0.0.1", "b": "10.0.0.2"}
    info = RunInfo(run_id="m-1", cluster="m", state="running", started=1.0, hosts=("a", "b"),
                   checked=json.loads(json.dumps(checked)))  # as run.json reads it back
    assert recorded_addresses(info) == {"a": "10.0.0.1", "b": "10.0.0.2"}
    gpus, cpu = recorded_facts(info)
    assert gpus == {"a": 2} and cpu == {"a": HostCpuFacts(boot_id="x", cpus=frozenset({0, 1}))}
    # a host joined since (its address not recorded), or an older corral's record: every
    # host is checked again
    assert recorded_addresses(RunInfo(run_id="m-1", cluster="m", state="running", started=1.0,
                                      hosts=("a", "b", "c"), checked=checked)) is None
    assert recorded_addresses(RunInfo(run_id="m-1", cluster="m", state="running", started=1.0,
                                      hosts=("a", "b"), checked=RECORDED)) is None


def test_a_second_join_takes_the_first_joiners_facts_from_the_runs_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = {**RECORDED, "address": {"a": ADDRESSES["a"], "b": ADDRESSES["b"]},
                "gpus": {"a": 0, "b": 0}}
    path = _cluster(tmp_path, {**RUNNING, "checked": recorded})  # detached: nobody follows
    with path.open("a", encoding="utf-8") as toml:  # a fourth host to join second
        toml.write(f'\n[[hosts]]\nname = "d"\naddress = "local"\npython = "{sys.executable}"'
                   f'\nworkdir = "{tmp_path}/work-d"\n')
    pools: list[StandInPool] = []
    probed: list[str] = []
    cpu = HostCpuFacts(boot_id="boot-c", cpus=frozenset({0, 1}))

    def pool_for(config: ClusterConfig) -> StandInPool:
        pools.append(StandInPool(config, set()))
        return pools[-1]

    async def probe(transport: StandIn, *args: object) -> HostFacts:
        name = transport.host.name
        probed.append(name)
        return HostFacts(python_ok=True, torch="2.5.1", gpus=0, address=ADDRESSES[name],
                         cpu=cpu if name == "c" else None)

    async def full_check(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run's hosts are not checked again")

    async def pushed(*args: object) -> None:
        return None

    async def launched(*args: object) -> int:
        return 4242

    monkeypatch.setattr("remote.run.join.HostPool", pool_for)
    monkeypatch.setattr("remote.run.join.check_and_plan", full_check)
    monkeypatch.setattr("remote.run.join_check.probe_host", probe)
    monkeypatch.setattr("remote.run.join._push", pushed)
    monkeypatch.setattr("remote.run.join.launch_host", launched)
    assert main(["-c", str(path), "join", "c", "--run", "m-1"]) == 0, capsys.readouterr()
    info = read_run_info(load_cluster(path), "m-1")
    assert info.hosts == ("a", "b", "c")
    assert recorded_addresses(info) == {k: ADDRESSES[k] for k in "abc"}
    assert recorded_facts(info) == ({"a": 0, "b": 0, "c": 0}, {"c": cpu})
    assert info.checked is not None and info.checked["torch"]["c"] == "2.5.1"
    assert main(["-c", str(path), "join", "d", "--run", "m-1"]) == 0, capsys.readouterr()
    assert probed == ["c", "d"]  # each join probed its joiner alone
    # the second join: only d's links with a, b and c (c's address from the first join)
    assert sorted(pools[-2].asked) == [
        ("a", "connect d"), ("a", "listen"), ("b", "connect d"), ("b", "listen"),
        ("c", "connect d"), ("c", "listen"), ("d", "connect a,b,c"), ("d", "listen")]
    assert read_run_info(load_cluster(path), "m-1").hosts == ("a", "b", "c", "d")
