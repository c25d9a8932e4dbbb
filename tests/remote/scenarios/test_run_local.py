"""Runs on ``local`` hosts: a host that cannot even start names itself and its output."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from remote.api import HostStatus, RunStatus
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.run import launch_lock
from remote.run.controller import SshRunController

try:
    from runkit import bounded, run_processes, run_to_end, tiny_run
except ImportError:  # collected as a package
    from tests.remote.runkit import (  # type: ignore[no-redef]
        bounded,
        run_processes,
        run_to_end,
        tiny_run,
    )

pytestmark = pytest.mark.slow


def _python_that_cannot_launch(path: Path) -> Path:
    """An interpreter that passes every pre-flight probe but fails to start torchrun."""
    path.write_text("#!/bin/sh\n"
                    'if [ "$1" = -m ] && [ "$2" = trainer.launcher ]; then\n'
                    f"  echo \"$0: cannot start the launcher\" >&2; exit 127\nfi\n"
                    f"exec {shlex.quote(sys.executable)} \"$@\"\n")
    path.chmod(0o755)
    return path


async def test_a_host_whose_launcher_cannot_start_fails_the_run_by_name(tmp_path: Path) -> None:
    good = HostSection(name="good", address="local", python=sys.executable,
                       workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
    broken = HostSection(name="broken", address="local",
                         python=str(_python_that_cannot_launch(tmp_path / "no-python")),
                         workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
    config = ClusterConfig(
        path=tmp_path / "cluster.toml",
        cluster=ClusterSection(name="local", master="good", run_root=str(tmp_path / "runs"),
                               rendezvous_port=_free_port()),
        hosts=(good, broken), run=tiny_run(steps=5))
    run_id, events = await run_to_end(config)
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed", final
    assert final.failed_host == "broken" and final.failed_rank is None
    assert "no-python" in final.detail  # the shell's own complaint, from the launcher log
    assert "never joined the rendezvous: good, broken" in final.detail
    assert any(isinstance(e, HostStatus) and e.host == "broken" and e.state == "failed"
               for e in events)
    assert run_processes(run_id) == []  # the good host's launcher was stopped
    # The check passed: the status that leaves it carries the mesh it measured (the
    # console's network view draws it), each direction between the two hosts.
    pushing = next(e for e in events if isinstance(e, RunStatus) and e.state == "pushing")
    assert {(link.source, link.target) for link in pushing.links} == {
        ("good", "broken"), ("broken", "good")}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_failed_check_releases_the_launch_lock_before_its_final_status(
    tmp_path: Path,
) -> None:
    # A python whose torch cannot be imported: the pre-flight check fails on "torch".
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "torch.py").write_text("raise ImportError('no torch here')\n")
    python = tmp_path / "python3"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(shadow))} "
                      f"exec {shlex.quote(sys.executable)} \"$@\"\n")
    python.chmod(0o755)
    host = HostSection(name="a", address="local", python=str(python),
                       workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
    config = ClusterConfig(
        path=tmp_path / "cluster.toml",
        cluster=ClusterSection(name="local", master="a", run_root=str(tmp_path / "runs"),
                               rendezvous_port=_free_port()),
        hosts=(host,), run=tiny_run(steps=5))
    controller = SshRunController(config)
    try:
        handle = await controller.start()
        async for event in bounded(handle.events()):
            if isinstance(event, RunStatus) and event.state in ("failed", "completed"):
                final = event
                break
        # The reader stops at the final status: the lock must already be gone then, not
        # only when the abandoned event stream is collected.
        assert final.state == "failed" and "a:torch" in final.detail, final
        assert not Path(launch_lock.lock_path(config)).exists()
    finally:
        await controller.aclose()
