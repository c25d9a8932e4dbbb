"""``corral fetch`` over a real sshd: the final weights come back with a matching sha256, and
an interrupted fetch resumes where it stopped (a real run's weights fetched back and loaded:
tests/remote/scenarios/test_attach_sshd.py's run to the end)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

import console.cli as cli
import console.session as session
from remote.config.cluster import ClusterConfig
from remote.hosts.pool import HostPool
from remote.records.runs import RunInfo, local_run_dir, write_run_info
from remote.run import fetch
from remote.run.fetch import fetch_results
from trainer.events import CheckpointEvent

try:
    from recorded import write_recorded
except ImportError:  # collected as a package
    from tests.remote.recorded import write_recorded  # type: ignore[no-redef]

pytestmark = pytest.mark.sshd
RUN = "t-20260101-000000-abcdef"


class Interrupted(Exception):
    """Stands for the fetch being cut off (Ctrl-C, a dropped connection)."""


def _run_with_final(cluster: Any, size: int = 3 << 20) -> tuple[ClusterConfig, dict[str, bytes]]:
    """A recorded run of host h0 whose run directory there holds a final adapter."""
    config = cluster.config()
    write_run_info(config, RunInfo(run_id=RUN, cluster="t", state="completed", started=0.0,
                                   hosts=("h0",)))
    # h0 is this machine: its run directory is the local one; fetched/ is beside final/.
    final = local_run_dir(config, RUN) / "final"
    final.mkdir(parents=True)
    files = {"adapter_model.bin": os.urandom(size), "adapter_config.json": b'{"r": 8}\n'}
    for name, data in files.items():
        (final / name).write_bytes(data)
    return config, files


async def _fetch(config: ClusterConfig, **options: Any) -> fetch.Fetched:
    pool = HostPool(config)
    try:
        return await fetch_results(config, pool, RunInfo(
            run_id=RUN, cluster="t", state="completed", started=0.0, hosts=("h0",)), **options)
    finally:
        await pool.aclose()


def _fetched(config: ClusterConfig) -> Path:
    return local_run_dir(config, RUN) / "fetched" / "final"


async def test_fetch_brings_back_the_final_weights_verified(sshd_cluster: Any) -> None:
    config, files = _run_with_final(sshd_cluster(1))
    result = await _fetch(config)
    assert result.host == "h0" and result.files == 2 and result.resumed == 0
    assert result.bytes == sum(len(d) for d in files.values())
    for name, data in files.items():
        got = (_fetched(config) / name).read_bytes()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    again = await _fetch(config)  # everything is here already: nothing is copied
    assert again.bytes == 0


async def test_an_interrupted_fetch_resumes_without_copying_again(
        sshd_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config, files = _run_with_final(sshd_cluster(1))
    monkeypatch.setattr(fetch, "CHUNK_BYTES", 512 << 10)
    chunks: list[str] = []

    def cut_after_two(line: str) -> None:
        chunks.append(line)
        if sum(c.startswith("adapter_model.bin") for c in chunks) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        await _fetch(config, progress=cut_after_two)
    weights = _fetched(config) / "adapter_model.bin"
    assert not weights.exists()  # never a half-written file under its real name
    assert (weights.parent / "adapter_model.bin.part").stat().st_size == 2 * (512 << 10)

    chunks.clear()
    result = await _fetch(config, progress=chunks.append)
    assert result.resumed == 2 * (512 << 10)
    # The small config file was complete already; only the rest of the weights is copied.
    assert result.bytes == len(files["adapter_model.bin"]) - result.resumed
    assert weights.read_bytes() == files["adapter_model.bin"]
    assert not any(p.name.endswith(".part") for p in _fetched(config).iterdir())


async def test_a_corrupt_partial_copy_is_caught_by_the_checksum(
        sshd_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config, files = _run_with_final(sshd_cluster(1))
    monkeypatch.setattr(fetch, "CHUNK_BYTES", 1 << 20)

    def cut(line: str) -> None:
        if line.startswith("adapter_model.bin"):
            raise Interrupted

    with pytest.raises(Interrupted):
        await _fetch(config, progress=cut)
    part = _fetched(config) / "adapter_model.bin.part"
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(fetch.CorralError, match="does not match its sha256"):
        await _fetch(config)
    assert not part.exists()
    await _fetch(config)  # the next fetch starts the file again and succeeds
    assert (_fetched(config) / "adapter_model.bin").read_bytes() == files["adapter_model.bin"]


def test_the_cli_fetches_the_newest_checkpoint(
        sshd_cluster: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = _run_with_final(sshd_cluster(1), size=1000)
    run_dir = local_run_dir(config, RUN)
    (run_dir / "checkpoints").mkdir()
    for step in (3, 6):
        (run_dir / "checkpoints" / f"step-{step:08d}.pt").write_bytes(bytes([step]) * 5000)
    write_recorded(run_dir, RunInfo(run_id=RUN, cluster="t", state="completed", started=0.0,
                                    hosts=("h0",)), [
        ("h0", CheckpointEvent(t=1.0 + s, rank=0, step=s,
                               path=str(run_dir / "checkpoints" / f"step-{s:08d}.pt")))
        for s in (3, 6)])
    monkeypatch.setattr(session, "load_config", lambda _path: config)
    assert cli.main(["fetch", RUN, "--checkpoint"]) == 0
    out = capsys.readouterr().out
    assert "sha256 verified" in out and "from h0" in out
    assert (run_dir / "fetched" / "step-00000006.pt").read_bytes() == bytes([6]) * 5000
    assert cli.main(["fetch", "no-such-run"]) == 2


async def test_a_script_runs_outputs_come_back_from_every_host_over_ssh(
        sshd_cluster: Any, tmp_path: Path) -> None:
    """A script's working directories (RUN_DIR/cwd/<host>) over sshd: rank 0's, a PATH in it
    with a name the shell would split, and every host's; a link out of the run stays there."""
    from remote.run.fetch_outputs import fetch_outputs

    config = sshd_cluster(2).config()
    run_dir = local_run_dir(config, RUN)  # both hosts are this machine: one run directory
    (tmp_path / "secret").write_text("not the run's")
    for host in ("h0", "h1"):
        cwd = run_dir / "cwd" / host
        (cwd / "out dir").mkdir(parents=True)
        (cwd / "out dir" / "it's.pt").write_bytes(host.encode() * 4000)
        (cwd / "leak").symlink_to(tmp_path / "secret")
    info = RunInfo(run_id=RUN, cluster="t", state="stopped", started=0.0, hosts=("h0", "h1"))
    pool = HostPool(config)
    try:
        [whole] = await fetch_outputs(config, pool, info, [])
        named = await fetch_outputs(config, pool, info, ["out dir/it's.pt"], all_hosts=True)
        with pytest.raises(fetch.CorralError, match="out of the run"):
            await fetch_outputs(config, pool, info, ["leak"])
    finally:
        await pool.aclose()
    assert whole.host == "h0" and whole.files == 1 and whole.left_out == 1
    assert (run_dir / "fetched" / "h0" / "out dir" / "it's.pt").read_bytes() == b"h0" * 4000
    assert [r.host for r in named] == ["h0", "h1"]
    assert not (run_dir / "fetched" / "h0" / "leak").exists()
    assert (run_dir / "fetched" / "h1" / "out dir" / "it's.pt").read_bytes() == b"h1" * 4000
