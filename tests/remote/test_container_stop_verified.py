"""A container stop is verified by the engine's own state and bounded in time (issue 41 item
4/High 5): an engine that hangs or fails makes ``stop`` say the host is not verified, within
its limit, never "no process of it is left"."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from remote.config.cluster import HostSection
from remote.config.container import ContainerSection
from remote.hosts import container
from remote.hosts.transport import LocalTransport
from remote.records.runs import describe_stop
from remote.run.stop import StopNotVerified, count_run_processes, stop_host

ENGINES = {
    "hangs": "#!/bin/sh\nexec sleep 1000\n",
    "fails": "#!/bin/sh\necho 'Cannot connect to the engine daemon' >&2\nexit 125\n",
    "answers none": "#!/bin/sh\nexit 0\n",
    "answers one": "#!/bin/sh\n[ \"$1\" = ps ] && echo 0123abcd\nexit 0\n",
}


def host_with_engine(tmp_path: Path, script: str) -> HostSection:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "podman").write_text(script)
    (fake / "podman").chmod(0o755)
    return HostSection(name="h", address="local", python=sys.executable,
                       workdir=str(tmp_path / "work"), container=ContainerSection(image="i:1"),
                       env={"PATH": f"{fake}:{os.environ['PATH']}"})


@pytest.mark.parametrize("engine", sorted(ENGINES))
async def test_a_stop_says_what_the_engine_says_within_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    monkeypatch.setattr(container, "ENGINE_LIMIT_S", 2)
    transport = LocalTransport(host_with_engine(tmp_path, ENGINES[engine]))
    run_dir = tmp_path / "runs" / "t-1"
    run_dir.mkdir(parents=True)
    began = time.monotonic()
    if engine in ("hangs", "fails"):
        with pytest.raises(StopNotVerified) as caught:
            await stop_host(transport, str(run_dir), "t-1", grace_s=0.2)
        assert "cannot be verified" in caught.value.message and "on h" in caught.value.message
        with pytest.raises(StopNotVerified):
            await count_run_processes(transport, "t-1")
    else:
        left = await stop_host(transport, str(run_dir), "t-1", grace_s=0.2)
        assert left == (1 if engine == "answers one" else 0)
    assert time.monotonic() - began < 30  # each engine command is cut at its limit


def test_an_unverified_host_makes_the_stop_not_clean() -> None:
    from remote.events import StopReport

    report = StopReport(run_id="t-1", remaining={"h0": 0}, unverified=("h1",))
    assert not report.clean
    assert "h1 not verified" in describe_stop(report)
