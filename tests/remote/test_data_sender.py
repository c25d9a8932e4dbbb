"""A host's data stream from a sender process of its own (``remote.hosts.data_sender``): a
sender that cannot reach its host, one that dies, and one whose master is interrupted or gone
are each an error naming the host, and leave no process behind. (The stream itself, through
a real sshd, is in test_data_travels_sshd.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from remote.config.cluster import HostSection, SshSection
from remote.hosts import data_sender
from remote.hosts.command_errors import CompletedCommand
from remote.hosts.data_sender import DataSyncError, SendJob, send
from remote.hosts.data_sync import DataProgress
from remote.hosts.data_tree import DataFile
from remote.hosts.ssh import SshTransport

DEADLINE_S = 30.0


def _children() -> dict[int, str]:
    """This process's child processes: pid → command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            found[int(entry.name)] = cmdline
    return found


def _senders() -> list[int]:
    return [pid for pid, words in _children().items() if "remote.hosts.data_sender" in words]


async def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.02)


@contextmanager
def _silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (an SSH handshake waits)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def _job(tmp_path: Path, port: int) -> SendJob:
    source = tmp_path / "shard.bin"
    source.write_bytes(b"x" * 4096)
    host = HostSection(name="gpu7", address="127.0.0.1", port=port, user="root",
                       workdir=str(tmp_path / "work"), gpus=0)
    ssh = SshSection(connect_timeout=120.0, known_hosts_file=str(tmp_path / "known_hosts"),
                     config_file=str(tmp_path / "no-config"))
    return SendJob(host=host, ssh=ssh, command="cat > /dev/null", head={"files": []},
                   files=(DataFile(rel="shard.bin", source=source, size=4096,
                                   mtime_ns=source.stat().st_mtime_ns, sha256="0" * 64),),
                   timeout=10.0)


def _transport(job: SendJob) -> SshTransport:
    # Never connected: a job this large goes to a sender process, which connects itself.
    return SshTransport(job.host, None)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _every_job_to_a_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_sender, "SENDER_MIN_BYTES", 0)


def test_the_master_feeds_the_first_large_host_and_senders_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    large = 64 << 20
    monkeypatch.setattr(data_sender, "SENDER_MIN_BYTES", large)
    needs = {"a": 2**10, "b": large, "c": 5 * large, "d": large, "e": 0}
    assert data_sender.fed_by_senders(needs) == {"c", "d"}  # b: this process; a, e: small
    assert data_sender.fed_by_senders({"a": large}) == set()


async def test_a_sender_that_cannot_reach_its_host_names_it(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = int(closed.getsockname()[1])
    job = _job(tmp_path, port)
    with pytest.raises(DataSyncError) as failed:
        await send(_transport(job), job, DataProgress(host="gpu7"))
    assert str(failed.value).startswith("data sync to gpu7: ")
    assert "127.0.0.1" in str(failed.value)
    assert _senders() == []


async def test_a_sender_runs_corrals_code_whatever_folder_it_is_started_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A launch folder with a ``remote/`` package of its own, corral started from it.
    impostor = tmp_path / "cwd" / "remote" / "hosts"
    impostor.mkdir(parents=True)
    for folder in (impostor, impostor.parent):
        (folder / "__init__.py").write_text("")
    (impostor / "data_sender.py").write_text("raise SystemExit(3)\n")
    monkeypatch.chdir(impostor.parent.parent)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = int(closed.getsockname()[1])
    job = _job(tmp_path, port)
    with pytest.raises(DataSyncError) as failed:
        await send(_transport(job), job, DataProgress(host="gpu7"))
    assert "127.0.0.1" in str(failed.value) and "exit status 3" not in str(failed.value)


@asynccontextmanager
async def _sending(tmp_path: Path) -> AsyncIterator[asyncio.Future[CompletedCommand]]:
    """A send whose sender process has started and waits on a host that never answers."""
    with _silent_port() as port:
        job = _job(tmp_path, port)
        sending = asyncio.ensure_future(send(_transport(job), job, DataProgress(host="gpu7")))
        await _until(lambda: _senders() != [], "a sender process started")
        yield sending


async def test_a_sender_that_dies_is_an_error_naming_the_host(tmp_path: Path) -> None:
    async with _sending(tmp_path) as sending:
        os.kill(_senders()[0], signal.SIGKILL)
        with pytest.raises(DataSyncError) as failed:
            await sending
    assert str(failed.value).startswith(
        "data sync to gpu7: its sender process ended (killed by signal 9) before the host's "
        "receiver did")
    assert _senders() == []


async def test_an_interrupted_sync_leaves_no_sender_behind(tmp_path: Path) -> None:
    async with _sending(tmp_path) as sending:
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
    assert _senders() == []


def test_a_sender_whose_master_is_gone_stops_by_itself(tmp_path: Path) -> None:
    # The master holds the sender's input open while it runs; when the master dies, however it
    # dies, that input ends, and the sender stops there (its connection then ends the host's
    # receiver), mid-handshake here.
    with _silent_port() as port:
        packed = pickle.dumps(_job(tmp_path, port))
        sender = subprocess.Popen([sys.executable, "-m", "remote.hosts.data_sender"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert sender.stdin is not None
            sender.stdin.write(data_sender._LENGTH.pack(len(packed)) + packed)
            sender.stdin.flush()
            sender.stdin.close()
            assert sender.wait(timeout=DEADLINE_S) != 0  # long before its connect timeout
            assert sender.stdout is not None
            said = [json.loads(line) for line in sender.stdout.read().splitlines()]
            assert all(set(line) == {"sent", "files"} for line in said)  # progress, no last line
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
