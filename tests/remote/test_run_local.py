"""Runs on ``local`` hosts: a host that cannot even start names itself and its output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from remote.api import HostStatus, RunStatus
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.run.controller import SshRunController

try:
    from runkit import bounded, run_processes, tiny_run
except ImportError:  # collected as a package
    from tests.remote.runkit import bounded, run_processes, tiny_run  # type: ignore[no-redef]

pytestmark = pytest.mark.slow


async def test_a_host_whose_launcher_cannot_start_fails_the_run_by_name(tmp_path: Path) -> None:
    good = HostSection(name="good", address="local", python=sys.executable,
                       workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
    broken = HostSection(name="broken", address="local", python=str(tmp_path / "no-python"),
                         workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
    config = ClusterConfig(
        path=tmp_path / "cluster.toml",
        cluster=ClusterSection(name="local", master="good", run_root=str(tmp_path / "runs"),
                               rendezvous_port=_free_port()),
        hosts=(good, broken), run=tiny_run(steps=5))
    controller = SshRunController(config, preflight=False)
    try:
        handle = await controller.start()
        events = [e async for e in bounded(handle.events())]
    finally:
        await controller.aclose()
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed", final
    assert final.failed_host == "broken" and final.failed_rank is None
    assert "no-python" in final.detail  # the shell's own complaint, from the launcher log
    assert "never joined the rendezvous: good, broken" in final.detail
    assert any(isinstance(e, HostStatus) and e.host == "broken" and e.state == "failed"
               for e in events)
    assert run_processes(handle.run_id) == []  # the good host's launcher was stopped


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
