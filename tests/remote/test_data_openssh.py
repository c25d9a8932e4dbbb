"""A host's data stream through OpenSSH's ``ssh`` (``remote.hosts.data_openssh``): only where
it carries corral's settings whole (its known_hosts file alone, strict, never a prompt, no
proxy); the host's ``env`` values on the stream's input, never on its command line; a stream
``ssh`` could not open goes through asyncssh instead; a host slow to finish is a timeout. The
pump that writes the stream into ``ssh``'s pipe: every byte in order, spliced or not; a file
changed meanwhile refused before its last bytes; interrupted, nothing left running.
(Through a real sshd: test_data_travels_sshd.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from remote.config.cluster import HostSection, SshSection
from remote.hosts import data_openssh, data_sender
from remote.hosts.command_errors import CompletedCommand, RemoteTimeout
from remote.hosts.data_openssh import openssh_argv, openssh_hosts
from remote.hosts.data_sender import DataSyncError, SendJob, send
from remote.hosts.data_sync import DataProgress
from remote.hosts.data_tree import DataFile
from remote.hosts.login_shell import framed
from remote.hosts.ssh import CIPHERS, SshTransport

FAKE_SSH = """#!/bin/sh
# ssh as far as this test needs: the options skipped, the command after -- run here.
while [ "$1" != "--" ]; do shift; done
shift 2
{status}
exec sh -c "$1"
"""


def _settings(tmp_path: Path) -> tuple[HostSection, SshSection]:
    (tmp_path / "known_hosts").write_text("")
    host = HostSection(name="gpu7", address="10.0.0.7", port=2222, user="ml",
                       identity_file=str(tmp_path / "id_ed25519"),
                       workdir=str(tmp_path / "work"), gpus=0)
    ssh = SshSection(known_hosts_file=str(tmp_path / "known_hosts"),
                     config_file=str(tmp_path / "no-config"), connect_timeout=7.0,
                     keepalive=15.0)
    return host, ssh


def _fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: str = "") -> None:
    fake = tmp_path / "ssh"
    fake.write_text(FAKE_SSH.format(status=status))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(data_openssh, "CLIENT", str(fake))


def test_ssh_gets_corrals_host_keys_ciphers_and_endpoint_and_nothing_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ssh(tmp_path, monkeypatch)
    host, ssh = _settings(tmp_path)
    argv = openssh_argv(host, ssh, "python -S -c 'receive'")
    assert argv is not None
    options = dict(argv[i + 1].split("=", 1) for i, word in enumerate(argv) if word == "-o")
    assert options["UserKnownHostsFile"] == str(tmp_path / "known_hosts")
    assert (options["StrictHostKeyChecking"], options["BatchMode"],
            options["GlobalKnownHostsFile"], options["UpdateHostKeys"]) == (
                "yes", "yes", "/dev/null", "no")
    assert options["Ciphers"] == ",".join(CIPHERS) and options["ConnectTimeout"] == "7"
    assert argv[argv.index("-F") + 1] == "/dev/null"  # no config file: none read
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "ml"
    assert argv[argv.index("-i") + 1] == str(tmp_path / "id_ed25519")
    # Run by sh whatever the account's login shell, its output framed (login_shell.py).
    assert argv[-3:] == ["--", "10.0.0.7", framed("python -S -c 'receive'")]


def test_ssh_is_not_used_where_it_would_not_carry_corrals_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ssh(tmp_path, monkeypatch)
    host, ssh = _settings(tmp_path)
    jump = tmp_path / "ssh_config"
    jump.write_text("Host 10.0.0.7\n  ProxyJump bastion\n")
    spaced = tmp_path / "my keys"
    spaced.mkdir()
    local = HostSection(name="cpu1", address="local", workdir=str(tmp_path / "w1"), gpus=0)
    refused = {
        "insecure host keys": (host, replace(ssh, known_hosts="insecure")),
        "no known_hosts file": (host, replace(ssh, known_hosts_file=str(tmp_path / "none"))),
        "a proxy in the config file": (host, replace(ssh, config_file=str(jump))),
        "a path ssh -o would split": (replace(host, identity_file=str(spaced / "id")), ssh),
        "a local host": (local, ssh),
    }
    for why, (one, settings) in refused.items():
        assert openssh_argv(one, settings, "true") is None, why
    assert openssh_hosts([host, local], ssh) == {"gpu7"}
    monkeypatch.setattr(data_openssh, "CLIENT", None)  # not installed
    assert openssh_argv(host, ssh, "true") is None


def test_hosts_ssh_reaches_are_fed_apart_and_the_master_feeds_one_of_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    large = 64 << 20
    monkeypatch.setattr(data_sender, "SENDER_MIN_BYTES", large)
    needs = {"a": large, "b": large, "c": large, "d": 2**10}
    assert data_sender.fed_by_senders(needs, openssh={"a", "b", "c", "d"}) == {"a", "b", "c"}
    assert data_sender.fed_by_senders(needs, openssh={"a"}) == {"a", "c"}  # b: the master


def _job(tmp_path: Path, env: dict[str, str]) -> SendJob:
    host, ssh = _settings(tmp_path)
    source = tmp_path / "shard.bin"
    source.write_bytes(b"x" * 5000)
    return SendJob(host=replace(host, env=env), ssh=ssh,
                   command="read -r head; wc -c; echo \"token=$HF_TOKEN\"",
                   head={"files": []}, timeout=10.0,
                   files=(DataFile(rel="shard.bin", source=source, size=5000,
                                   mtime_ns=source.stat().st_mtime_ns, sha256=None),))


@pytest.fixture(autouse=True)
def _every_job_fed_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_sender, "SENDER_MIN_BYTES", 0)


async def test_the_stream_goes_through_ssh_with_the_hosts_env_on_its_input(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ssh(tmp_path, monkeypatch)
    seen: list[list[str]] = []
    real = data_openssh.run_openssh

    async def watched(host, argv, command, pump, *, timeout):  # type: ignore[no-untyped-def]
        seen.append(argv)
        return await real(host, argv, command, pump, timeout=timeout)

    monkeypatch.setattr(data_sender, "run_openssh", watched)
    job = _job(tmp_path, {"HF_TOKEN": "s3cret"})
    tally = DataProgress(host="gpu7")
    done = await send(SshTransport(job.host, None), job, tally)  # type: ignore[arg-type]
    assert done.ok, done.stderr
    assert done.stdout.split() == ["5000", "token=s3cret"]  # every byte after the head line
    assert (tally.sent_bytes, tally.sent_files) == (5000, 1)
    assert len(seen) == 1 and not any("s3cret" in word for word in seen[0])


async def test_a_stream_ssh_cannot_open_goes_through_asyncssh_from_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ssh(tmp_path, monkeypatch, status="cat >/dev/null; exit 255")  # refused, say
    through: list[tuple[str, int]] = []

    async def from_sender(job: SendJob, tally: DataProgress) -> CompletedCommand:
        through.append((job.host.name, tally.sent_bytes))
        return CompletedCommand(command=job.command, exit_status=0, stdout=json.dumps({}),
                                stderr="")

    monkeypatch.setattr(data_sender, "_from_sender", from_sender)
    job = _job(tmp_path, {})
    done = await send(SshTransport(job.host, None), job,  # type: ignore[arg-type]
                      DataProgress(host="gpu7"))
    assert done.ok and through == [("gpu7", 0)]  # counted anew


async def test_a_host_that_does_not_finish_after_the_last_byte_is_a_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ssh(tmp_path, monkeypatch, status="cat >/dev/null; exec sleep 60")
    job = replace(_job(tmp_path, {}), timeout=0.5)
    with pytest.raises(RemoteTimeout) as late:
        await send(SshTransport(job.host, None), job,  # type: ignore[arg-type]
                   DataProgress(host="gpu7"))
    assert str(late.value).startswith("on gpu7: ") and "0.5 s of its last byte" in str(late.value)



def _pumped(tmp_path: Path, sizes: list[int], *, tamper: bool = False
            ) -> tuple[bytes, list[bytes], DataSyncError | None, DataProgress]:
    """``pump`` into a real pipe drained by a thread here: what came out of it, the files'
    bytes, the error it raised and its tally. ``tamper``: a file's time changes under the pump
    once its first bytes have moved (a writer)."""
    files, contents = [], []
    for i, size in enumerate(sizes):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(size))
        contents.append(path.read_bytes())
        files.append(DataFile(rel=path.name, source=path, size=size,
                              mtime_ns=path.stat().st_mtime_ns, sha256=None))
    reading, writing = os.pipe()
    got: list[bytes] = []
    drain = threading.Thread(target=lambda: got.extend(iter(lambda: os.read(reading, 1 << 16),
                                                            b"")))
    drain.start()
    tally, error, real_move = DataProgress(host="gpu7"), None, data_sender._move

    def move(source: int, out: int, offset: int, count: int) -> int:
        moved = real_move(source, out, offset, count)
        if tamper:
            os.utime(source, ns=(1, 1))
        return moved

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(data_sender, "_move", move)
            data_sender.pump(writing, {"files": len(files)}, tuple(files), tally, first=b"E\n")
    except DataSyncError as exc:
        error = exc
    finally:
        os.close(writing)
        drain.join()
        os.close(reading)
    return b"".join(got), contents, error, tally


@pytest.mark.parametrize("splice", [True, False], ids=["spliced", "read-and-written"])
def test_the_pump_sends_the_head_and_every_byte_of_every_file_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, splice: bool) -> None:
    if not splice:  # a system without os.splice: every byte read and written here
        monkeypatch.delattr(os, "splice", raising=False)
    sizes = [0, 10, data_sender.TAIL_BYTES, 3 * data_sender.CHUNK_BYTES + 12345]
    got, contents, error, tally = _pumped(tmp_path, sizes)
    assert error is None
    assert got == b"E\n" + b'{"files": 4}\n' + b"".join(contents)
    assert (tally.sent_bytes, tally.sent_files) == (sum(sizes), 4)


def test_a_file_that_changes_while_pumped_is_refused_before_its_last_bytes_leave(
        tmp_path: Path) -> None:
    size = 2 * data_sender.CHUNK_BYTES
    got, contents, error, tally = _pumped(tmp_path, [size], tamper=True)
    assert error is not None and "changed while it was being sent" in str(error)
    body = got[len(b"E\n" + b'{"files": 1}\n'):]
    assert contents[0].startswith(body) and len(body) <= size - data_sender.TAIL_BYTES
    assert tally.sent_files == 0


async def test_an_interrupted_stream_through_ssh_leaves_no_process_and_no_pump_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ssh(tmp_path, monkeypatch, status=f"echo $$ > {tmp_path / 'pid'}; exec sleep 60")
    source = tmp_path / "large.bin"
    source.write_bytes(os.urandom(4 * data_sender.PIPE_BYTES))  # more than the pipe holds
    job = replace(_job(tmp_path, {}), files=(DataFile(
        rel="large.bin", source=source, size=source.stat().st_size,
        mtime_ns=source.stat().st_mtime_ns, sha256=None),))
    ended = threading.Event()
    real_pump = data_sender.pump

    def pump(*args: Any, **kwargs: Any) -> None:
        try:
            real_pump(*args, **kwargs)
        finally:
            ended.set()

    monkeypatch.setattr(data_sender, "pump", pump)
    tally = DataProgress(host="gpu7")
    sending = asyncio.ensure_future(send(SshTransport(job.host, None), job,  # type: ignore[arg-type]
                                         tally))
    deadline = time.monotonic() + 10.0
    while not (tmp_path / "pid").exists() or tally.sent_bytes == 0:  # the pump is blocked
        assert time.monotonic() < deadline and not sending.done()
        await asyncio.sleep(0.02)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    with pytest.raises(ProcessLookupError):  # ssh (here: its stand-in) killed and reaped
        os.kill(int((tmp_path / "pid").read_text()), 0)
    assert await asyncio.to_thread(ended.wait, 10.0)  # its pipe closed: the pump's write ended
    assert tally.sent_bytes < source.stat().st_size
