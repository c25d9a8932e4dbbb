"""Chunks, not files: a large data file is cut by its content here, a host rebuilds a changed
file from its new chunks and the chunks its cache already holds, and checks the whole."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import io
import json
import os
import sys
from pathlib import Path

import pytest

from remote.checks.trackers import chunk_items
from remote.config.cluster import HostSection
from remote.hosts import data_chunks, data_sync
from remote.hosts.data_chunks import Chunked, chunk_file, recipe
from remote.hosts.data_scripts import ASSEMBLE_PY
from remote.hosts.data_sender import DataSyncError, _Counts, feed, pump
from remote.hosts.data_sync import STAMP_NS, DataProgress, cache_dir, probe, sync_host
from remote.hosts.data_tree import CHUNK_BYTES, DataFile, DataSet, HashCache, collect
from remote.hosts.transport import LocalTransport

pytest.importorskip("pyfastcdc")
MiB = 1 << 20


def _rewrite(data: bytes, at: int, length: int) -> bytes:
    return data[:at] + os.urandom(length) + data[at + length:]


def _cut(path: Path, data: bytes) -> Chunked:
    path.write_bytes(data)
    info = path.stat()
    return chunk_file(path, info.st_size, info.st_mtime_ns)


def test_cuts_follow_content_whatever_the_read_size(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(3 * MiB + 12345)
    whole = _cut(tmp_path / "a", data)
    assert whole.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(length for _, length in whole.chunks) == len(data)
    monkeypatch.setattr(data_chunks, "READ_BYTES", 200_000)  # many blocks, cuts across them
    chunk_file.cache_clear()
    assert _cut(tmp_path / "b", data).chunks == whole.chunks


def test_a_rewritten_region_leaves_the_other_chunks_found(tmp_path: Path) -> None:
    old = os.urandom(24 * MiB)
    new = _rewrite(old, 9 * MiB, 5 * MiB)
    before = _cut(tmp_path / "old", old)
    offsets, at = {}, 0
    for ident, length in before.chunks:
        offsets[ident] = ("f" * 64, at)
        at += length
    pieces, spans = recipe(_cut(tmp_path / "new", new), offsets)
    sent = sum(length for _, length in spans)
    assert 5 * MiB <= sent <= 6 * MiB  # the region and a chunk or two around it, not 24 MiB
    assert sum(int(str(p[2])) for p in pieces) == len(new)


def test_a_host_rebuilds_the_file_from_its_cache_and_the_stream(tmp_path: Path) -> None:
    # The host's own code (ASSEMBLE_PY) run here on a stream in memory: no process.
    old = os.urandom(12 * MiB)
    new = _rewrite(old, 3 * MiB, 2 * MiB)
    cache = tmp_path / "cache"
    cache.mkdir()
    old_sha = hashlib.sha256(old).hexdigest()
    (cache / old_sha).write_bytes(old)
    before = _cut(tmp_path / "old", old)
    found, at = {}, 0
    for ident, length in before.chunks:
        found[ident] = (old_sha, at)
        at += length
    pieces, spans = recipe(_cut(tmp_path / "new", new), found)
    stream = io.BufferedReader(io.BytesIO(b"".join(new[o:o + n] for o, n in spans)))
    host: dict[str, object] = {"os": os, "sys": sys}
    exec(ASSEMBLE_PY, host)
    digest, out = hashlib.sha256(), io.BytesIO()
    buf = memoryview(bytearray(CHUNK_BYTES))
    copy_piece = host["copy_piece"]
    assert callable(copy_piece)
    for piece in pieces:
        copy_piece(stream, str(cache), *piece, digest, out, buf)
    assert out.getvalue() == new
    assert digest.hexdigest() == hashlib.sha256(new).hexdigest()
    assert stream.read() == b""  # exactly the new chunks were read from the stream


def _host(tmp_path: Path) -> LocalTransport:
    return LocalTransport(HostSection(name="b", address="10.0.0.2", python=sys.executable,
                                      workdir=str(tmp_path / "work-b"), gpus=0))


async def _sync(host: LocalTransport, data: DataSet, tmp_path: Path) -> DataProgress:
    manifest = str(tmp_path / "run" / "hosts" / "b.data")
    found = await probe(host, data, None, manifest)
    return await sync_host(host, data, found, manifest, DataProgress(host="b"))


async def test_a_changed_region_of_a_large_shard_sends_its_chunks_not_the_file(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    shard = repo / "data" / "shard.bin"
    old = os.urandom(20 * MiB)
    shard.write_bytes(old)
    host = _host(tmp_path)

    def data() -> DataSet:
        return collect(repo, True, repo, HashCache(tmp_path / "hashes.json"))

    first = await _sync(host, data(), tmp_path)
    assert first.sent_bytes == 20 * MiB
    new = _rewrite(old, 7 * MiB, 5 * MiB)
    shard.write_bytes(new)
    changed = await _sync(host, data(), tmp_path)
    assert 5 * MiB <= changed.sent_bytes <= 6 * MiB
    assert changed.sent_files == 1
    lines = (tmp_path / "run" / "hosts" / "b.data").read_text().splitlines()
    links = {rel: target for target, rel in (line.split("\t") for line in lines)}
    cached = Path(links["data/shard.bin"])
    assert cached.parent == Path(cache_dir(host.host.workdir))
    assert cached.read_bytes() == new and cached.name == hashlib.sha256(new).hexdigest()


def test_check_names_the_data_extra_when_its_packages_are_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert chunk_items() == []  # the dev environment has the data extra
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "blake3" else real(name, *rest))
    [item] = chunk_items()
    assert item.ok and "blake3" in item.detail and "corral[data]" in item.detail


async def test_without_pyfastcdc_a_changed_shard_is_sent_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_sync, "chunker", lambda: None)
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    shard = repo / "data" / "shard.bin"
    shard.write_bytes(os.urandom(10 * MiB))
    host = _host(tmp_path)
    data = collect(repo, True, repo, HashCache(tmp_path / "hashes.json"))
    assert (await _sync(host, data, tmp_path)).sent_bytes == 10 * MiB
    shard.write_bytes(_rewrite(shard.read_bytes(), MiB, MiB))
    data = collect(repo, True, repo, HashCache(tmp_path / "hashes.json"))
    assert (await _sync(host, data, tmp_path)).sent_bytes == 10 * MiB
    assert not (Path(cache_dir(host.host.workdir)) / ".chunks").exists()


async def test_a_cached_file_that_lends_wrong_bytes_is_dropped_never_used(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    shard = repo / "data" / "shard.bin"
    old = os.urandom(20 * MiB)  # over the probe's re-hash budget: trusted by its record
    shard.write_bytes(old)
    host = _host(tmp_path)
    await _sync(host, collect(repo, True, repo, HashCache(tmp_path / "hashes.json")), tmp_path)
    cache = Path(cache_dir(host.host.workdir))
    victim = cache / hashlib.sha256(old).hexdigest()
    os.chmod(victim, 0o644)  # rewritten, its mtime put back and its record forged
    victim.write_bytes(os.urandom(20 * MiB))
    os.chmod(victim, 0o444)
    os.utime(victim, ns=(STAMP_NS, STAMP_NS))
    index = json.loads((cache / ".verified").read_text())
    info = victim.stat()
    index[victim.name] = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino,
                          info.st_dev]
    (cache / ".verified").write_text(json.dumps(index))
    new = _rewrite(old, 7 * MiB, 5 * MiB)
    shard.write_bytes(new)
    with pytest.raises(DataSyncError, match="arrived changed"):
        await _sync(host, collect(repo, True, repo, HashCache(tmp_path / "hashes.json")),
                    tmp_path)
    assert not victim.exists()
    again = await _sync(host, collect(repo, True, repo, HashCache(tmp_path / "hashes.json")),
                        tmp_path)
    assert again.sent_bytes == 20 * MiB
    assert (cache / hashlib.sha256(new).hexdigest()).read_bytes() == new


def test_a_stream_carries_only_a_recipes_new_chunks(tmp_path: Path) -> None:
    # Both ways a host is fed (the event loop's ``feed``, ``ssh``'s ``pump``) carry a
    # recipe's spans alone, in order, counted as sent.
    path = tmp_path / "f"
    data = os.urandom(300_000)
    path.write_bytes(data)
    info = path.stat()
    file = DataFile(rel="f", source=path, size=info.st_size, mtime_ns=info.st_mtime_ns,
                    sha256=None, spans=((1000, 5000), (200_000, 70_000)))
    want = data[1000:6000] + data[200_000:270_000]
    tally = _Counts()
    read, write = os.pipe()
    pump(write, {}, (file,), tally)
    os.close(write)
    with os.fdopen(read, "rb") as got:
        assert got.read() == b"{}\n" + want
    assert (tally.sent_bytes, tally.sent_files) == (len(want), 1)

    async def fed() -> bytes:
        return b"".join([chunk async for chunk in feed({}, (file,), _Counts())])

    assert asyncio.run(fed()) == b"{}\n" + want
