"""The data sync to a host in a real podman container (rootfs mode, as in
test_containers_podman.py): the host is on this machine, but its container does not see the
launch folder (on a tmpfs mounted here: the container's overlay of / holds no mount below
it), so the files are sent into its cache, and every link of the run resolves, inside the
container, to the file's bytes."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from remote.config.cluster import HostSection
from remote.config.container import ContainerSection
from remote.hosts.data_marker import Marker
from remote.hosts.data_sync import DataProgress, plan_problem, probe, sync_host
from remote.hosts.data_tree import HashCache, collect
from remote.hosts.interpreter import python_word
from remote.hosts.transport import LocalTransport

try:
    from test_containers_podman import podman  # the fixture
except ImportError:  # collected as a package
    from tests.remote.scenarios.test_containers_podman import podman  # noqa: F401

pytestmark = pytest.mark.slow

READ_LINKS = """
import hashlib, sys
for line in open(sys.argv[1]):
    target, rel = line.rstrip("\\n").split("\\t")
    with open(target, "rb") as f:
        print(rel, hashlib.sha256(f.read()).hexdigest())
"""


@pytest.fixture
def unseen(tmp_path: Path) -> Iterator[Path]:
    """A launch folder the container cannot see: a tmpfs of its own (skips where one cannot
    be mounted), unmounted after."""
    folder = tmp_path / "unseen"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


async def test_a_container_hosts_links_resolve_inside_it(
        tmp_path: Path, podman: dict[str, str], unseen: Path) -> None:
    (unseen / "data").mkdir()
    for i in range(3):
        (unseen / "data" / f"part-{i}.bin").write_bytes(os.urandom(5000))
    data = collect(unseen, True, unseen, HashCache(tmp_path / "hashes.json"))
    host = HostSection(name="h1", address="local", python=sys.executable,
                       workdir=str(tmp_path / "work"), gpus=0, env=podman,
                       container=ContainerSection(rootfs="/", engine="podman",
                                                  mounts=(str(tmp_path / "runs"),)))
    transport = LocalTransport(host)
    links = str(tmp_path / "runs" / "r" / "hosts" / "h1.data")
    with Marker(unseen) as marker:
        found = await probe(transport, data, marker.pair(), links)
    assert not found.shared  # a local host, but its container does not see the folder
    assert plan_problem("h1", data, found) is None
    done = await sync_host(transport, data, found, links, DataProgress(host="h1"))
    assert done.sent_files == 3
    read = await transport.run(f"{python_word(host)} -c {shlex.quote(READ_LINKS)} "
                               f"{shlex.quote(links)}", timeout=120.0)
    assert read.ok, read.stderr
    inside = dict(line.split() for line in read.stdout.splitlines())
    assert inside == {f"data/part-{i}.bin": hashlib.sha256(
        (unseen / "data" / f"part-{i}.bin").read_bytes()).hexdigest() for i in range(3)}
