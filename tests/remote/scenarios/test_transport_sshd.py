"""SSH and local transports against real sshd daemons: commands, quoting, host keys, timeouts."""

from __future__ import annotations

import asyncio
import shlex
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from remote.hosts.command_errors import (
    HostKeyChanged,
    HostKeyNotTrusted,
    HostUnreachable,
    RemoteCommandError,
    RemoteTimeout,
)
from remote.hosts.pool import HostPool
from remote.hosts.transport import LocalTransport
from remote.hosts.trust import trust_host

pytestmark = pytest.mark.sshd


async def test_commands_run_over_ssh_and_values_stay_quoted(sshd_cluster, tmp_path: Path) -> None:
    cluster = sshd_cluster(1)
    pool = HostPool(cluster.config())
    try:
        transport = await pool.get("h0")
        assert await pool.get("h0") is transport  # one connection per host, reused
        canary = tmp_path / "canary"
        nasty = f"x'; touch {canary}; echo \"$(touch {canary})\" `touch {canary}`"
        done = await transport.run(f"printf %s {shlex.quote(nasty)}", timeout=10)
        assert done.ok and done.stdout == nasty
        assert not canary.exists()
        # The test daemons' shells are not top-level to bash (conftest.py: SetEnv SHLVL=1), so
        # no command pays for the user's ~/.bashrc: bash runs at level 2 and hands the command
        # it execs a level of 1 (a top-level bash, which sources the bashrc, hands it 0).
        done = await transport.run("echo $SHLVL", timeout=10)
        assert int(done.stdout) >= 1, done.stdout
        done = await transport.run("cat", input=b"through stdin", timeout=10)
        assert done.stdout == "through stdin"
        failed = await transport.run("echo oops >&2; exit 3", timeout=10)
        assert failed.exit_status == 3 and not failed.ok and "oops" in failed.stderr
        with pytest.raises(RemoteCommandError, match=r"(?s)h0.*status 3.*oops"):
            await transport.run("echo oops >&2; exit 3", check=True, timeout=10)
        with pytest.raises(RemoteTimeout, match="h0"):
            await transport.run("sleep 30", timeout=0.5)
    finally:
        await pool.aclose()


async def test_gather_reports_each_host_separately(sshd_cluster) -> None:
    cluster = sshd_cluster(2)
    hosts = [cluster.host("h0"), cluster.host("h1")]
    # A third host whose port has no daemon.
    dead = replace(cluster.host("h0"), name="dead", port=_closed_port())
    pool = HostPool(cluster.config(hosts=[*hosts, dead]))
    try:
        results = await pool.gather(lambda t: t.run("echo $SSH_CONNECTION", timeout=10))
        assert results["h0"].ok and results["h1"].ok  # type: ignore[union-attr]
        assert str(cluster.hosts[1].port) in results["h1"].stdout  # type: ignore[union-attr]
        assert isinstance(results["dead"], HostUnreachable)
    finally:
        await pool.aclose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unknown_host_key_is_refused_with_its_fingerprint(sshd_cluster) -> None:
    cluster = sshd_cluster(1, trusted=False)
    config = cluster.config()
    pool = HostPool(config)
    try:
        with pytest.raises(HostKeyNotTrusted) as caught:
            await pool.get("h0")
        message = str(caught.value)
        assert cluster.hosts[0].fingerprint in message
        assert "corral trust h0" in message
        # The fix the message names works: trust, then connect.
        line = await trust_host(config, "h0", lambda question: True)
        assert cluster.hosts[0].fingerprint in line
        done = await (await pool.get("h0")).run("echo ok", timeout=10)
        assert done.stdout.strip() == "ok"
    finally:
        await pool.aclose()


async def test_a_changed_host_key_is_refused(sshd_cluster) -> None:
    cluster = sshd_cluster(2)
    # h1's known_hosts line is put under h0's port: h0 now presents a key that does not match.
    lines = cluster.known_hosts.read_text().splitlines()
    wrong = lines[1].replace(f"[127.0.0.1]:{cluster.hosts[1].port}",
                             f"[127.0.0.1]:{cluster.hosts[0].port}")
    cluster.known_hosts.write_text(wrong + "\n")
    pool = HostPool(cluster.config(hosts=[cluster.host("h0")]))
    try:
        with pytest.raises(HostKeyChanged) as caught:
            await pool.get("h0")
        # Reported as a change, with the recorded and the presented fingerprints.
        message = str(caught.value)
        assert "CHANGED" in message and "intercepting" in message
        assert cluster.hosts[0].fingerprint in message and cluster.hosts[1].fingerprint in message
    finally:
        await pool.aclose()


async def test_a_malformed_known_hosts_line_is_skipped_with_a_warning_naming_it(
        sshd_cluster, capsys) -> None:
    cluster = sshd_cluster(1)
    good = cluster.known_hosts.read_text()
    # Before the good line, as OpenSSH skips it: it must block no host.
    cluster.known_hosts.write_text("[127.0.0.1]:22 ssh-ed25519 not*base64\n" + good)
    pool = HostPool(cluster.config())
    try:
        transport = await pool.get("h0")
        assert (await transport.run("echo reached", check=True)).stdout == "reached\n"
    finally:
        await pool.aclose()
    warned = capsys.readouterr().err
    assert f"warning: {cluster.known_hosts}, line 1: the key does not parse" in warned
    assert "line is skipped" in warned and "Traceback" not in warned


async def test_an_unanswering_port_fails_within_the_connect_timeout(sshd_cluster) -> None:
    cluster = sshd_cluster(1)
    # A listener that accepts and never speaks SSH: only the connect timeout can end the wait.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = cluster.config(hosts=[cluster.host("h0", port=port)],
                            ssh=cluster.ssh_section(connect_timeout=1.0))
    pool = HostPool(config)
    try:
        started = time.monotonic()
        with pytest.raises(HostUnreachable, match=rf"h0.*127\.0\.0\.1:{port}"):
            await pool.get("h0")
        assert time.monotonic() - started < 1.0 + 2.5
    finally:
        await pool.aclose()
        server.close()


async def test_local_transport_runs_the_same_command_lines(tmp_path: Path) -> None:
    from remote.config.cluster import HostSection

    transport = LocalTransport(HostSection(name="here", address="local"))
    done = await transport.run("printf '%s|' \"$0\" a 'b c'", timeout=10)
    assert done.stdout == "sh|a|b c|"
    assert (await transport.run("cat", input=b"in", timeout=10)).stdout == "in"
    with pytest.raises(RemoteTimeout, match="here"):
        await transport.run("sleep 30", timeout=0.3)
    lines = [line async for line in transport.stream("printf 'one\\ntwo\\n'")]
    assert lines == ["one", "two"]


def _running(marker: str) -> list[str]:
    """This machine's processes whose command line names ``marker``, but for the daemons."""
    out = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "sshd" not in line and "pgrep" not in line]


@pytest.mark.parametrize("moment", ["opening", "running"])
async def test_a_command_given_up_on_is_gone_once_its_connection_is_closed(
        sshd_cluster, tmp_path: Path, moment: str) -> None:
    """What corral started on a host never outlives corral (issue 59): a command interrupted
    while its channel opens (the host runs it before corral hears the open's answer) or while
    it runs, on a host with an ``env``, has ended on the host once the pool is closed."""
    cluster = sshd_cluster(1)
    pool = HostPool(cluster.config(hosts=[cluster.host("h0", env={"CORRAL_T": "1"})]))
    marker = str(tmp_path / "given-up")
    try:
        transport = await pool.get("h0")
        if moment == "opening":  # the open's answer comes late: the cancel lands before it
            conn = transport._conn  # type: ignore[attr-defined]
            opened = conn.create_process

            async def late(*args: object, **kwargs: object) -> object:
                process = await opened(*args, **kwargs)
                await asyncio.sleep(1.0)
                return process

            conn.create_process = late
        task = asyncio.ensure_future(transport.run(f"sleep 300 # {marker}", timeout=600))
        deadline = time.monotonic() + 30
        while not _running(marker) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await pool.aclose()
    assert _running(marker) == []
