"""The data sync, through a host's real shell (``LocalTransport``, a cache of its own): a first
sync sends every file, an unchanged one nothing, a changed file alone; a sync killed mid-file
leaves nothing the next one uses; a write through a run's link never reaches a later run;
what a host cannot take is refused before a byte is sent, naming what to do; a host's cache
keeps what running and recent runs link to and loses the rest."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

import pytest

from profiles.user_errors import UsageError
from remote.config.cluster import HostSection
from remote.hosts import data_sync
from remote.hosts.data_sender import DataSyncError
from remote.hosts.data_sync import (
    STAMP_NS,
    DataProgress,
    HostData,
    cache_dir,
    plan_problem,
    probe,
    sync_host,
)
from remote.hosts.data_tree import DataSet, HashCache, collect, hash_alike
from remote.hosts.transport import LocalTransport


def _host(tmp_path: Path, name: str = "b") -> LocalTransport:
    # An address of its own: the host does not count as this machine; the probe is given no
    # marker, so it sees none of this machine's files and every byte goes through its shell.
    return LocalTransport(HostSection(name=name, address="10.0.0.2", python=sys.executable,
                                      workdir=str(tmp_path / f"work-{name}"), gpus=0))


def _repo(tmp_path: Path, files: int = 50, size: int = 4096) -> Path:
    repo = tmp_path / "repo"
    (repo / "data" / "shards").mkdir(parents=True)
    (repo / "train.py").write_text("print('hi')\n")
    for i in range(files):
        (repo / "data" / "shards" / f"part-{i:03}.bin").write_bytes(os.urandom(size))
    return repo


def _data(repo: Path, tmp_path: Path) -> DataSet:
    return collect(repo, True, repo, HashCache(tmp_path / "hashes.json"))


async def _sync(transport: LocalTransport, data: DataSet, tmp_path: Path) -> DataProgress:
    manifest = str(tmp_path / "run" / "hosts" / f"{transport.host.name}.data")
    Path(manifest).unlink(missing_ok=True)
    found = await probe(transport, data, None, manifest)
    assert plan_problem(transport.host.name, data, found) is None
    done = await sync_host(transport, data, found, manifest, DataProgress(host=transport.host.name))
    assert Path(manifest).exists()  # by the probe when nothing was to be sent, else the sync
    return done


async def test_a_second_sync_sends_nothing_and_a_changed_file_goes_alone(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    host = _host(tmp_path)
    first = await _sync(host, _data(repo, tmp_path), tmp_path)
    assert (first.sent_files, first.sent_bytes, first.cached_files) == (50, 50 * 4096, 0)
    again = await _sync(host, _data(repo, tmp_path), tmp_path)
    assert (again.sent_files, again.sent_bytes, again.cached_files) == (0, 0, 50)
    (repo / "data" / "shards" / "part-007.bin").write_bytes(b"changed" * 100)
    changed = await _sync(host, _data(repo, tmp_path), tmp_path)
    assert (changed.sent_files, changed.sent_bytes, changed.cached_files) == (1, 700, 49)
    assert "1 file sent (0.0 MiB), 49 already cached" in changed.summary()
    # The run's link list names every file's cached copy, which holds the file's bytes.
    lines = (tmp_path / "run" / "hosts" / "b.data").read_text().splitlines()
    links = dict(reversed(line.split("\t")) for line in lines)
    assert len(links) == 50
    cached = Path(links["data/shards/part-007.bin"])
    assert cached.parent == Path(cache_dir(host.host.workdir))
    assert cached.read_bytes() == b"changed" * 100
    assert cached.stat().st_mode & 0o222 == 0  # read-only


async def test_a_sync_killed_mid_file_is_never_used_and_the_next_one_completes(
        tmp_path: Path) -> None:
    repo = _repo(tmp_path, files=1, size=64 * 2**20)
    host = _host(tmp_path)
    data = _data(repo, tmp_path)
    found = await probe(host, data, None)
    progress = DataProgress(host="b")
    syncing = asyncio.ensure_future(sync_host(host, data, found, str(tmp_path / "m"), progress))
    deadline = asyncio.get_running_loop().time() + 60
    while progress.sent_bytes < 8 * 2**20:  # well into the file, far from its end
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    syncing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await syncing
    cache = Path(cache_dir(host.host.workdir))
    sha = hashlib.sha256(data.files[0].source.read_bytes()).hexdigest()
    assert not (cache / sha).exists()  # nothing under its name: the partial is never used
    assert not (await probe(host, data, None)).have
    done = await _sync(host, data, tmp_path)
    assert done.sent_files == 1
    assert hashlib.sha256((cache / sha).read_bytes()).hexdigest() == sha


async def test_a_write_through_a_runs_link_never_reaches_the_next_run(tmp_path: Path) -> None:
    repo = _repo(tmp_path, files=2)
    host = _host(tmp_path)
    data = _data(repo, tmp_path)
    await _sync(host, data, tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    target, rel = (tmp_path / "run" / "hosts" / "b.data").read_text().splitlines()[0].split("\t")
    (cwd / "input.bin").symlink_to(target)
    if os.geteuid() != 0:  # read-only stops any user but root
        with pytest.raises(PermissionError):
            (cwd / "input.bin").write_bytes(b"rank wrote this")
        return
    os.chmod(target, 0o644)  # root: a rank can do anything; what it changed is found
    (cwd / "input.bin").write_bytes(b"rank wrote this")
    data = _data(repo, tmp_path)  # the next run's: every file known here now
    found = await probe(host, data, None)
    assert Path(target).name not in found.have  # changed: not counted as cached
    again = await _sync(host, data, tmp_path)
    assert again.sent_files == 1
    restored = Path(target)
    assert restored.read_bytes() == (repo / rel).read_bytes()
    assert restored.stat().st_mtime_ns == STAMP_NS


def test_over_budget_is_refused_naming_sizes_free_space_and_the_fix(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    for name, size in (("big.bin", 3 * 2**20), ("small.bin", 2**20)):
        with (repo / "data" / name).open("wb") as sparse:
            sparse.truncate(size)
    data = _data(repo, tmp_path)
    found = HostData(have=frozenset(), shared=False, free=2**30, missing=())
    problem = plan_problem("gpu2", data, found)
    assert problem is not None
    assert "gpu2 has 1024.0 MiB free for 4.0 MiB" in problem
    assert "data/big.bin (3.0 MiB); data/small.bin (1.0 MiB)" in problem
    assert "[run] data" in problem
    assert plan_problem("gpu2", data, HostData(have=frozenset(), shared=True, free=0,
                                              missing=())) is None  # in place: nothing sent


async def test_a_link_out_of_the_folder_is_linked_in_place_or_named_before_launch(
        tmp_path: Path) -> None:
    dataset = tmp_path / "elsewhere" / "fineweb"
    dataset.mkdir(parents=True)
    (dataset / "shard-0.npy").write_bytes(b"tokens")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text("print('hi')\n")
    (repo / "edu_fineweb10B").symlink_to(dataset)
    data = _data(repo, tmp_path)
    assert not data.files and [link.rel for link in data.links] == ["edu_fineweb10B"]
    lacking = HostData(have=frozenset(), shared=False, free=2**40, missing=(str(dataset),))
    problem = plan_problem("b", data, lacking)
    assert problem is not None and "edu_fineweb10B" in problem and str(dataset) in problem
    assert "[run] data" in problem
    assert plan_problem("a", data, HostData(have=frozenset(), shared=True, free=0,
                                           missing=())) is None
    # Named in [run] data, its files are sent under the link's name.
    named = collect(repo, ("edu_fineweb10B",), repo, HashCache(tmp_path / "hashes.json"))
    assert [f.rel for f in named.files] == ["edu_fineweb10B/shard-0.npy"] and not named.links
    done = await _sync(_host(tmp_path), named, tmp_path)
    assert done.sent_files == 1


async def test_a_new_file_is_hashed_as_it_arrives_and_then_known_here(tmp_path: Path) -> None:
    # No pass over the data before the first byte leaves: a file this machine has not
    # hashed is named by the digest of what the host got, and this machine learns it.
    repo = _repo(tmp_path, files=3)
    data = _data(repo, tmp_path)
    assert [f.sha256 for f in data.files] == [None] * 3
    assert not HashCache(tmp_path / "hashes.json").entries  # nothing read, nothing hashed
    await _sync(_host(tmp_path), data, tmp_path)
    again = HashCache(tmp_path / "hashes.json")
    known = collect(repo, True, repo, again)
    assert [f.sha256 for f in known.files] == [
        hashlib.sha256(f.source.read_bytes()).hexdigest() for f in known.files]
    assert not again.changed
    lines = (tmp_path / "run" / "hosts" / "b.data").read_text().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in lines) == sorted(
        f.sha256 for f in known.files if f.sha256 is not None)


async def test_a_touched_file_as_large_as_a_cached_one_is_hashed_here_not_sent(
        tmp_path: Path) -> None:
    repo = _repo(tmp_path, files=4)
    host = _host(tmp_path)
    await _sync(host, _data(repo, tmp_path), tmp_path)
    touched = repo / "data" / "shards" / "part-002.bin"
    os.utime(touched, ns=(10**18, 10**18))  # new to the hash cache, same bytes
    data = _data(repo, tmp_path)
    assert [f.rel for f in data.new()] == ["data/shards/part-002.bin"]
    manifest = str(tmp_path / "run" / "hosts" / "b.data")
    found = await probe(host, data, None, manifest)
    assert {size for _, size in found.alike} == {4096} and not found.linked
    data = hash_alike(data, {size for _, size in found.alike})
    assert not data.new()
    done = await sync_host(host, data, found, manifest, DataProgress(host="b"))
    assert (done.sent_files, done.cached_files) == (0, 4)


async def test_a_file_that_changes_before_it_is_sent_is_refused_never_cached(
        tmp_path: Path) -> None:
    repo = _repo(tmp_path, files=2)
    host = _host(tmp_path)
    data = _data(repo, tmp_path)
    found = await probe(host, data, None)
    (repo / "data" / "shards" / "part-001.bin").write_bytes(os.urandom(4096))
    with pytest.raises(DataSyncError) as refused:
        await sync_host(host, data, found, str(tmp_path / "m"), DataProgress(host="b"))
    assert "part-001.bin changed while it was being sent: run again" in str(refused.value)
    cache = Path(cache_dir(host.host.workdir))
    first = hashlib.sha256((repo / "data" / "shards" / "part-000.bin").read_bytes()).hexdigest()
    assert {p.name for p in cache.glob("[0-9a-f]*")} <= {first}  # the file before, at most
    # Two hosts that got different bytes for one listing: never both learned.
    hashes = HashCache(tmp_path / "other.json")
    hashes.learn(data.files[0], "a" * 64)
    with pytest.raises(UsageError, match="changed while it was being sent"):
        hashes.learn(data.files[0], "b" * 64)


async def test_a_path_the_hosts_must_have_is_checked_on_each(tmp_path: Path) -> None:
    repo = _repo(tmp_path, files=1)
    there = tmp_path / "mnt" / "datasets"
    there.mkdir(parents=True)
    data = collect(repo, (str(there), str(tmp_path / "nowhere")), repo,
                   HashCache(tmp_path / "hashes.json"))
    assert data.host_paths == (str(there), str(tmp_path / "nowhere"))
    found = await probe(_host(tmp_path), data, None)
    assert found.missing == (str(tmp_path / "nowhere"),)
    problem = plan_problem("b", data, found)
    assert problem == (f"[run] data names {tmp_path / 'nowhere'}, which b does not have: put it "
                       "there, or name a path inside the launch folder to send it")


@pytest.mark.parametrize(("data", "says"), [
    ('["data/missing"]', "'data/missing'"),
    ('["../other"]', "is outside the launch folder"),
    ('[""]', "an empty path"),
])
def test_run_data_paths_are_checked_before_anything_starts(tmp_path: Path, data: str,
                                                           says: str) -> None:
    from remote.config.errors import ConfigError
    from remote.config.read import parse_cluster

    (tmp_path / "train.py").write_text("print('hi')\n")
    with pytest.raises(ConfigError) as refused:
        parse_cluster('[cluster]\nname = "s"\n[[hosts]]\nname = "a"\naddress = "local"\n'
                      f'[run]\nscript = "train.py"\ndata = {data}\n',
                      path=tmp_path / "cluster.toml")
    assert "[run] data" in str(refused.value) and says in str(refused.value)


def test_check_and_dry_run_say_what_data_will_travel(tmp_path: Path) -> None:
    from remote.checks.script_imports import DATA_CHECK, left_out_items
    from remote.config.read import parse_cluster
    from remote.config.task_code import user_code

    repo = _repo(tmp_path, files=3, size=2**20)
    text = ('[cluster]\nname = "s"\n[[hosts]]\nname = "a"\naddress = "local"\n'
            '[run]\nscript = "train.py"\n')
    config = parse_cluster(text, path=repo / "cluster.toml")
    items = left_out_items(config, user_code(config.run, config.path.parent))
    [item] = [i for i in items if i.name == DATA_CHECK]
    assert item.ok and item.detail.startswith("data: 3 files, 3.0 MiB by the data sync")
    assert "data/shards/part-000.bin (1.0 MiB)" in item.detail
    off = parse_cluster(text + "data = false\n", path=repo / "cluster.toml")
    items = left_out_items(off, user_code(off.run, off.path.parent))
    [item] = [i for i in items if i.name == DATA_CHECK]
    assert item.detail == "no data sent ([run] data = false)"


async def test_the_data_cache_keeps_running_and_recent_runs_files_and_prunes_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, host = _repo(tmp_path, files=3), _host(tmp_path)
    monkeypatch.setattr(data_sync, "KEEP_RUNS", 1)
    cache, sent = Path(cache_dir(host.host.workdir)), {}

    async def run(run_id: str, finished: bool) -> None:  # new bytes, a run of its own
        for shard in (repo / "data" / "shards").iterdir():
            shard.write_bytes(os.urandom(4096))
        data = _data(repo, tmp_path)
        layout = tmp_path / "runs" / run_id / "hosts"
        found = await probe(host, data, None, str(layout / "b.data"))
        await sync_host(host, data, found, str(layout / "b.data"), DataProgress(host="b"))
        if finished:  # what the launcher writes when it ends
            (layout / "b.exit").write_text("0\n")
        sent[run_id] = {str(f.sha256) for f in _data(repo, tmp_path).files}  # learned

    await run("r1", finished=False)  # still running, whatever its age
    await run("r2", finished=True)
    await run("r3", finished=True)
    await run("r4", finished=False)
    # Every file was used within KEEP_UNUSED_S (a day): nothing is removed yet.
    assert {p.name for p in cache.glob("[!.]*")} == set().union(*sent.values())
    monkeypatch.setattr(data_sync, "KEEP_UNUSED_S", 0.0)
    await run("r5", finished=True)
    # Pruned as r5's files landed: kept are the running runs' (r1, r4, and r5 itself, not
    # finished then) and the most recent finished one's (r3); r2's files are gone. The
    # running runs' links still resolve.
    kept = sent["r1"] | sent["r3"] | sent["r4"] | sent["r5"]
    assert {p.name for p in cache.glob("[!.]*")} == kept
    assert not sent["r2"] & {p.name for p in cache.glob("[!.]*")}
    for line in (tmp_path / "runs" / "r1" / "hosts" / "b.data").read_text().splitlines():
        assert Path(line.split("\t")[0]).exists()


def _rewrite_keeping_mtime(path: Path, content: bytes) -> None:
    """What a user or a rank as root can do: new bytes, the stamp and mode put back."""
    os.chmod(path, 0o644)
    path.write_bytes(content)
    os.chmod(path, 0o444)
    os.utime(path, ns=(STAMP_NS, STAMP_NS))


async def test_a_cached_file_rewritten_with_its_mtime_restored_is_sent_again(
        tmp_path: Path) -> None:
    repo = _repo(tmp_path, files=3)
    host = _host(tmp_path)
    await _sync(host, _data(repo, tmp_path), tmp_path)
    data = _data(repo, tmp_path)
    victim = Path(cache_dir(host.host.workdir)) / str(data.files[1].sha256)
    _rewrite_keeping_mtime(victim, os.urandom(4096))  # same size, same mtime, same mode
    found = await probe(host, data, None)
    assert victim.name not in found.have and len(found.have) == 2
    again = await _sync(host, data, tmp_path)
    assert (again.sent_files, again.cached_files) == (1, 2)
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == victim.name


async def test_a_rewrite_whose_record_was_forged_too_is_caught_by_the_sampled_rehash(
        tmp_path: Path) -> None:
    import json

    repo = _repo(tmp_path, files=3)
    host = _host(tmp_path)
    await _sync(host, _data(repo, tmp_path), tmp_path)
    data = _data(repo, tmp_path)
    cache = Path(cache_dir(host.host.workdir))
    victim = cache / str(data.files[0].sha256)
    _rewrite_keeping_mtime(victim, os.urandom(4096))
    index = json.loads((cache / ".verified").read_text())
    info = victim.stat()  # as if the ctime had been put back (a clock set back)
    index[victim.name] = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino,
                          info.st_dev]
    (cache / ".verified").write_text(json.dumps(index))
    found = await probe(host, data, None)  # 12 KiB: all of it under the sample's budget
    assert victim.name not in found.have and not victim.exists()
    assert (await _sync(host, data, tmp_path)).sent_files == 1
