"""A host's ``env`` reaches its command on stdin, never on a command line; when the values do
not arrive whole (corral interrupted or killed before sending them), the command does not run
and no helper waits on (issue 41 item 2: the orphan ``dd``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from remote.config.cluster import HostSection
from remote.hosts.transport import LocalTransport, with_host_env


async def test_env_values_arrive_and_the_command_sees_them(tmp_path: Path) -> None:
    host = HostSection(name="h", address="local", python=sys.executable,
                       workdir=str(tmp_path), env={"TOKEN": "a b'$(touch x)"})
    done = await LocalTransport(host).run('printf %s "$TOKEN"; cat', input=b"rest")
    assert done.ok, done.stderr
    assert done.stdout == "a b'$(touch x)rest"
    assert not (tmp_path / "x").exists()


def test_a_command_whose_env_never_arrives_does_not_run(tmp_path: Path) -> None:
    sent, data = with_host_env({"TOKEN": "secret"}, f"touch {tmp_path}/ran", None)
    assert data is not None and "secret" not in sent
    for partial in (b"", data[: len(data) // 2], data[:-2]):
        began = time.monotonic()
        done = subprocess.run(["sh", "-c", sent], input=partial, capture_output=True,
                              timeout=30)
        assert time.monotonic() - began < 5  # the end of stdin ends the wait at once
        assert done.returncode == 125, done
        assert b"the host env did not arrive" in done.stderr
        assert not (tmp_path / "ran").exists()
    whole = subprocess.run(["sh", "-c", sent], input=data, capture_output=True, timeout=30)
    assert whole.returncode == 0 and (tmp_path / "ran").exists()
