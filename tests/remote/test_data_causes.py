"""A data sync that fails keeps its cause (issue 81, item 4): a host's disk filling mid-file,
a cache it may not write, a file name that is not UTF-8 each end in corral's sentence, never
``data sync to b failed: Traceback (most recent call last):``; a loop of links in the data is
left out as the push's warning says. Through a host's real shell (``LocalTransport``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from profiles.user_errors import UsageError
from remote.config.cluster import HostSection
from remote.hosts.data_errors import MARK, host_error
from remote.hosts.data_sender import DataSyncError
from remote.hosts.data_sync import DataProgress, HostData, cache_dir, sync_host
from remote.hosts.data_tree import DataSet, HashCache, collect
from remote.hosts.push_tree import walk_tree
from remote.hosts.transport import LocalTransport

NOTHING_CACHED = HostData(have=frozenset(), shared=False, free=1 << 40, missing=())


def _repo(tmp_path: Path, files: int = 2, size: int = 4096) -> Path:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "train.py").write_text("print('hi')\n")
    for i in range(files):
        (repo / "data" / f"part-{i}.bin").write_bytes(os.urandom(size))
    return repo


def _data(repo: Path, tmp_path: Path) -> DataSet:
    return collect(repo, True, repo, HashCache(tmp_path / "hashes.json"))


def _host(tmp_path: Path, python: str = sys.executable) -> LocalTransport:
    return LocalTransport(HostSection(name="b", address="10.0.0.2", python=python,
                                      workdir=str(tmp_path / "work"), gpus=0))


async def _send(host: LocalTransport, data: DataSet, tmp_path: Path) -> str:
    with pytest.raises(DataSyncError) as failed:
        await sync_host(host, data, NOTHING_CACHED, str(tmp_path / "run" / "hosts" / "b.data"),
                        DataProgress(host="b"))
    said = str(failed.value)
    assert "Traceback" not in said
    return said


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Path]:
    """The host's data cache, made immutable (``chattr +i``: even root may not write)."""
    cache = Path(cache_dir(str(tmp_path / "work")))
    cache.mkdir(parents=True)
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(cache)], capture_output=True).returncode != 0:
        pytest.skip("needs chattr +i on this file system")
    try:
        yield cache
    finally:
        subprocess.run(["chattr", "-i", str(cache)], check=True)


async def test_a_cache_the_host_may_not_write_is_named_with_the_fix(
        tmp_path: Path, immutable: Path) -> None:
    said = await _send(_host(tmp_path), _data(_repo(tmp_path), tmp_path), tmp_path)
    assert said.startswith(f"data sync to b failed: permission denied on b at {immutable}/")
    assert "set the host's workdir to a folder it owns" in said


def test_a_file_name_that_is_not_utf8_is_refused_before_anything_naming_it(
        tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with open(os.path.join(os.fsencode(repo / "data"), b"caf\xe9.bin"), "wb") as out:
        out.write(b"latin-1 name")
    with pytest.raises(UsageError) as refused:
        _data(repo, tmp_path)
    assert "data file data/caf\\xe9.bin has a name that is not UTF-8" in refused.value.message
    assert ".corralignore" in refused.value.message


def test_the_host_side_last_error_is_mapped_to_corrals_sentence() -> None:
    full = MARK + '{"type": "OSError", "errno": 28, "path": null, "text": "No space"}'
    assert host_error("s4", f"Traceback (most recent call last):\n{full}\n", "/w/data") == (
        "disk full on s4 at /w/data: the data did not fit; free space there, or leave some "
        "data out with a line in .corralignore")
    name = MARK + '{"type": "UnicodeEncodeError", "errno": null, "path": null, "text": "x"}'
    assert "name is not UTF-8" in host_error("s4", name, "/w/data")
    read_only = MARK + '{"type": "OSError", "errno": 30, "path": "/w/data/x", "text": "ro"}'
    assert host_error("s4", read_only, "/w/data").startswith(
        "/w/data/x on s4 is on a read-only file system")
    assert host_error("s4", "Traceback (most recent call last):\nValueError: odd\n",
                      "/w") == "ValueError: odd"


async def test_a_loop_of_links_in_the_data_is_left_out_as_the_push_says(
        tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    os.symlink("b", repo / "data" / "a")
    os.symlink("a", repo / "data" / "b")
    assert "a loop of links (never followed)" in walk_tree(repo).left_out["data/a"]
    data = _data(repo, tmp_path)
    assert {f.rel for f in data.files} == {"data/part-0.bin", "data/part-1.bin"}
    assert not data.links
    done = await sync_host(_host(tmp_path), data, NOTHING_CACHED,
                           str(tmp_path / "run" / "hosts" / "b.data"), DataProgress(host="b"))
    assert done.sent_files == 2
