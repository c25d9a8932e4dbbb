"""torch's static rendezvous on every launch: the master's launcher is node 0 (it serves the
store at the address and port the check tested), the other hosts follow in cluster.toml's order,
and every launcher is told the same endpoint, run id and join timeout."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from remote.checks.plan import HostPlan
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.run.launch import RDZV_JOIN_TIMEOUT_S, LaunchPlan, torch_node_rank, torchrun_command

NAMES = ("a", "b", "c", "d")


def _config(tmp_path: Path, master: str) -> ClusterConfig:
    hosts = tuple(HostSection(name=n, address="local", gpus=0, nproc=1) for n in NAMES)
    return ClusterConfig(path=tmp_path / "cluster.toml",
                         cluster=ClusterSection(name="s", master=master, run_root=str(tmp_path)),
                         hosts=hosts, run=RunSection(steps=1))


def _place(config: ClusterConfig, index: int) -> HostPlan:
    return HostPlan(host=config.hosts[index], node_rank=index, first_rank=index, nproc=1,
                    device="cpu", gpus=0, visible_devices="", interface=None, local_addr=None)


@pytest.mark.parametrize("master", NAMES)
def test_the_master_is_node_zero_and_the_others_follow_in_host_order(
        tmp_path: Path, master: str) -> None:
    config = _config(tmp_path, master)
    ranks = {h.name: torch_node_rank(config, _place(config, i)) for i, h in enumerate(config.hosts)}
    assert ranks[master] == 0
    others = [n for n in NAMES if n != master]
    assert [ranks[n] for n in others] == list(range(1, len(NAMES)))


def test_every_launcher_joins_the_masters_static_store(tmp_path: Path) -> None:
    config = _config(tmp_path, "c")
    plan = LaunchPlan(run_id="s-20261127-000000-abcdef", run_dir=str(tmp_path / "run"),
                      code_digest="d" * 64, master_addr="10.0.0.3", port=29611,
                      nnodes=len(NAMES), user=None)
    for index, host in enumerate(config.hosts):
        words = shlex.split(torchrun_command(config, plan, _place(config, index)))
        flags = {w: words[words.index(w) + 1] for w in (
            "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id", "--rdzv-conf", "--node-rank",
            "--nnodes", "--max-restarts")}
        assert flags == {
            "--rdzv-backend": "static", "--rdzv-endpoint": "10.0.0.3:29611",
            "--rdzv-id": plan.run_id, "--rdzv-conf": f"timeout={RDZV_JOIN_TIMEOUT_S}",
            "--node-rank": str(torch_node_rank(config, _place(config, index))),
            "--nnodes": "4", "--max-restarts": "0"}, host.name
