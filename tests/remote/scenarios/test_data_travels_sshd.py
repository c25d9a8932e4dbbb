"""A script's data travels over real sshd hosts with no ``.corralignore``: minGPT's shape
(``data/input.txt``) and nanoGPT's (``data/x/train.bin``, hidden by the repository's
``.gitignore``) are read by relative path on every host. The master's sshd sees this machine's
files (the marker is read back) and links them in place; the other host has a private view
of the repository and of a dataset elsewhere (its own mount namespace, a tmpfs over each), so
its data is sent into its cache: once, then nothing, then the one changed file; a link to a
dataset it lacks is named before launch. (A file left home by ``.corralignore`` explained in the
run's status, with the line that sends it: test_files_travel_sshd.py's ``resume`` run.)"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from remote.api import LogLine, RunStatus
from remote.config.cluster import ClusterConfig, RunSection
from remote.config.task_code import user_code
from remote.hosts import data_openssh, data_sender
from remote.hosts.data_sync import cache_dir
from remote.hosts.pool import HostPool
from remote.run.data_push import sync_run_data
from remote.run.lifecycle import LaunchFailed
from trainer.run_layout import RunLayout

try:
    from conftest import SshdCluster
    from runkit import run_processes
    from test_script_run_local import run_to_end
except ImportError:  # collected as a package
    from tests.remote.conftest import SshdCluster  # type: ignore[no-redef]
    from tests.remote.runkit import run_processes  # type: ignore[no-redef]
    from tests.remote.scenarios.test_script_run_local import run_to_end  # type: ignore[no-redef]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480),
              pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")]

SCRIPT = """\
import json, os
from pathlib import Path
text = Path("data/input.txt").read_text()
shard = Path("data/shakespeare_char/train.bin").read_bytes()
shards = sorted(p.name for p in Path("data/shards").iterdir())
os.makedirs("out", exist_ok=True)
Path("out/seen.json").write_text(json.dumps({"text": text, "shard": shard.hex(),
                                             "shards": len(shards)}))
"""


def _repo(root: Path) -> Path:
    repo = root / "repo"
    (repo / "data" / "shakespeare_char").mkdir(parents=True)
    (repo / "data" / "shards").mkdir()
    (repo / "train.py").write_text(SCRIPT)
    (repo / ".gitignore").write_text("*.bin\n*.pkl\nout/\n")
    (repo / "data" / "input.txt").write_text("First Citizen:\n")
    (repo / "data" / "shakespeare_char" / "train.bin").write_bytes(bytes(range(16)))
    for i in range(48):
        (repo / "data" / "shards" / f"{i:02}.npy").write_bytes(bytes([i]) * 1000)
    return repo


def _private(*paths: Path) -> Callable[[int], list[str]]:
    """Daemon 1 in a mount namespace of its own, a tmpfs over each of ``paths``."""
    mounts = " && ".join(f"mount -t tmpfs tmpfs {p}" for p in paths)
    return lambda i: ([] if i == 0 else
                      ["unshare", "-m", "--propagation", "private", "sh", "-c",
                       f'{mounts} && exec "$@"', "sh"])


async def _sync(config: ClusterConfig) -> list[str]:
    pool = HostPool(config)
    try:
        user = user_code(config.run, config.path.parent)
        events = [e async for e in sync_run_data(pool, config, str(config.path.parent / "x"),
                                                 user)]
        return [e.text for e in events if isinstance(e, LogLine) and e.text.startswith("data on")]
    finally:
        await pool.aclose()


async def test_data_travels_once_and_only_what_changed(sshd_cluster, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "fineweb").mkdir(parents=True)
    cluster: SshdCluster = sshd_cluster(2, prefix=_private(repo, elsewhere))
    config = cluster.config(run=RunSection(script=str(repo / "train.py"), code=str(repo)),
                            name="data")
    run_id, events = await run_to_end(config)
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    assert run_processes(run_id) == []
    lines = [e.text for e in events if isinstance(e, LogLine) and e.text.startswith("data on")]
    assert sorted(lines) == [
        "data on h0: sees this machine's files, linked in place, 0 B sent",
        "data on h1: 50 files sent (0.0 MiB), 0 already cached"]
    layout = RunLayout(Path(config.cluster.run_root) / run_id)
    for host in ("h0", "h1"):
        seen = json.loads(Path(layout.script_cwd(host), "out", "seen.json").read_text())
        assert seen == {"text": "First Citizen:\n", "shard": bytes(range(16)).hex(),
                        "shards": 48}

    # A second sync sends nothing; one changed file of 50 goes alone.
    assert "data on h1: 0 files sent (0.0 MiB), 50 already cached" in await _sync(config)
    (repo / "data" / "shards" / "07.npy").write_bytes(b"new" * 10)
    assert "data on h1: 1 file sent (0.0 MiB), 49 already cached" in await _sync(config)

    # A link to a dataset outside the folder: h0 sees its target, h1 does not: named.
    (elsewhere / "fineweb" / "shard-0.npy").write_bytes(b"tokens")
    (repo / "edu_fineweb10B").symlink_to(elsewhere / "fineweb")
    with pytest.raises(LaunchFailed) as refused:
        await _sync(config)
    assert "edu_fineweb10B" in str(refused.value) and "h1 does not have" in str(refused.value)
    # Named in [run] data, its files are sent to h1 under the link's name.
    named = replace(config, run=replace(config.run, data=(str(repo / "edu_fineweb10B"),)))
    assert "data on h1: 1 file sent (0.0 MiB), 50 already cached" in await _sync(named)


async def test_a_host_fed_apart_gets_every_file_whole_through_ssh_or_a_sender(
        sshd_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fed: list[tuple[str, str]] = []
    peaks: list[int] = []
    from_sender, through_ssh = data_sender._from_sender, data_sender.run_openssh

    async def counted(job, tally):  # type: ignore[no-untyped-def]
        fed.append(("sender", job.host.name))
        done = await from_sender(job, tally)
        peaks.append(tally.sender_peak_kib)  # what the bench sums with the master's
        return done

    async def counted_ssh(host, argv, command, feed, *, timeout):  # type: ignore[no-untyped-def]
        fed.append(("ssh", host))
        return await through_ssh(host, argv, command, feed, timeout=timeout)

    monkeypatch.setattr(data_sender, "SENDER_MIN_BYTES", 0)  # every host that lacks a byte
    monkeypatch.setattr(data_sender, "MASTER_FEEDS", 0)  # ... fed apart, even the first
    monkeypatch.setattr(data_sender, "_from_sender", counted)
    monkeypatch.setattr(data_sender, "run_openssh", counted_ssh)
    repo = _repo(tmp_path)
    cluster: SshdCluster = sshd_cluster(2, prefix=_private(repo))
    config = cluster.config(run=RunSection(script=str(repo / "train.py"), code=str(repo)),
                            name="data")
    cache = Path(cache_dir(config.hosts[1].workdir))
    for way in ("ssh", "sender"):  # OpenSSH's client where it can; a sender where it is absent
        if way == "sender":
            monkeypatch.setattr(data_openssh, "CLIENT", None)
            shutil.rmtree(cache)
        assert sorted(await _sync(config)) == [
            "data on h0: sees this machine's files, linked in place, 0 B sent",
            "data on h1: 50 files sent (0.0 MiB), 0 already cached"]
        assert fed[-1] == (way, "h1")  # h0 links in place: nothing to send
        sent = sorted(cache.glob("[!.]*"))  # the cached files, not the cache's records
        assert len(sent) == 50 and all(hashlib.sha256(p.read_bytes()).hexdigest() == p.name
                                       for p in sent)
    assert fed == [("ssh", "h1"), ("sender", "h1")]
    assert len(peaks) == 1 and 10 << 10 < peaks[0] < 200 << 10  # KiB: an interpreter's worth
    assert "data on h1: 0 files sent (0.0 MiB), 50 already cached" in await _sync(config)
    assert len(fed) == 2
