"""SSH transport (asyncssh): one verified connection per host, ``corral trust``.

Connections honour the OpenSSH client config (``[ssh] config_file``: aliases, User, Port,
IdentityFile, ProxyJump), the ssh agent and the known_hosts file (``[ssh] known_hosts_file``).
Host keys are always verified unless ``[ssh] known_hosts = "insecure"``; an unknown or changed
key is refused with its fingerprint and the command that trusts it. Connect and keepalive
timeouts come from ``[ssh]``, so an unreachable host fails within the connect timeout.
``corral trust`` is ``remote.hosts.trust``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

from profiles.user_errors import CorralError
from remote.config.cluster import HostSection, SshSection
from remote.hosts.command_errors import (
    CompletedCommand,
    HostKeyChanged,
    HostKeyNotTrusted,
    HostUnreachable,
    RemoteTimeout,
    short_command,
)
from remote.hosts.known_hosts import host_pattern, parse_known_hosts, recorded_keys
from remote.hosts.login_shell import (
    FRAME,
    SHELL_QUESTION,
    LoginShellRefused,
    first_line,
    framed,
    is_frame,
    refused,
    shell_answer,
    unframed,
)
from remote.hosts.own_group import in_own_group
from remote.hosts.transport import CommandRunner, with_host_env
from remote.hosts.waits import within

_insecure_warned = False
_skipped_warned: set[str] = set()
"""known_hosts lines already warned about (``_known_hosts_arg`` runs once per host)."""


class AuthenticationFailed(HostUnreachable):
    """The host was reached but refused every key offered."""

    title = "authentication failed"


class ConnectionLost(CorralError):
    """An established connection to a host dropped."""

    title = "connection lost"


def _config_paths(ssh: SshSection) -> list[str]:
    path = Path(ssh.config_file).expanduser()
    return [str(path)] if path.is_file() else []


def _known_hosts_arg(ssh: SshSection) -> Any:
    global _insecure_warned
    if ssh.known_hosts == "insecure":
        if not _insecure_warned:
            print("warning: [ssh] known_hosts = \"insecure\": host keys are NOT verified; "
                  "anyone on the network path can impersonate your hosts", file=sys.stderr)
            _insecure_warned = True
        return None
    path = Path(ssh.known_hosts_file).expanduser()
    lines, skipped = parse_known_hosts(path)
    for warning in skipped:
        if warning not in _skipped_warned:  # once per process, not once per host
            _skipped_warned.add(warning)
            print(f"warning: {warning}", file=sys.stderr)
    if skipped:  # asyncssh refuses a whole file for one bad line: give it the good ones
        return "".join(line.raw + "\n" for line in lines).encode()
    # An empty known_hosts list trusts nothing: every key is then refused with its fingerprint.
    return str(path) if path.is_file() else b""


CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
           "aes256-ctr", "aes192-ctr", "aes128-ctr")
"""asyncssh's ciphers, AES-GCM first: asyncssh encrypts in Python's calls into OpenSSL, one
per packet, and AES-GCM (one call) streams a data sync about twice as fast as its default,
ChaCha20-Poly1305 (113 against 50 MiB/s over loopback sshd on the 2-core VM,
docs/benchmarks/data.md).
No CBC mode: the per-packet ``SSH_MSG_IGNORE`` is then useless (``_without_ignore_packets``)."""

_EMPTY_IGNORE = (String(b""),)
"""The arguments of the empty ``SSH_MSG_IGNORE`` asyncssh sends before every packet."""


def connect_options(host: HostSection, ssh: SshSection) -> dict[str, Any]:
    """Keyword arguments for ``asyncssh.connect`` to ``host`` under ``[ssh]``."""
    options: dict[str, Any] = {
        "encryption_algs": list(CIPHERS),
        "config": _config_paths(ssh),
        "known_hosts": _known_hosts_arg(ssh),
        "connect_timeout": ssh.connect_timeout,
        "keepalive_interval": ssh.keepalive,
        "keepalive_count_max": 3,
    }
    if host.port is not None:
        options["port"] = host.port
    if host.user is not None:
        options["username"] = host.user
    if host.identity_file is not None:
        options["client_keys"] = [str(Path(host.identity_file).expanduser())]
    return options


def resolve_endpoint(host: HostSection, ssh: SshSection) -> tuple[str, int]:
    """The HostName and Port ``host.address`` resolves to after the ssh_config lookup."""
    opts = asyncssh.SSHClientConnectionOptions(
        config=_config_paths(ssh), host=host.address,
        port=host.port if host.port is not None else (),
    )
    return str(opts.host), int(opts.port)


async def fetch_host_key(host: HostSection, ssh: SshSection) -> asyncssh.SSHKey:
    """The key the host presents in the SSH handshake (not verified)."""
    name, port = resolve_endpoint(host, ssh)
    try:
        key = await within(
            asyncssh.get_server_host_key(name, port, config=_config_paths(ssh)),
            ssh.connect_timeout,
        )
    except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
        raise HostUnreachable(host.name, name, port, _cause(exc)) from None
    if key is None:
        raise CorralError(f"{host.name} ({name}:{port}) presented no host key")
    return key


def _cause(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text


async def connect(host: HostSection, ssh: SshSection) -> asyncssh.SSHClientConnection:
    """An authenticated connection to ``host``; raises HostUnreachable / HostKeyNotTrusted."""
    options = connect_options(host, ssh)
    try:
        # A cancel as the connection opens is not lost, and the connection is closed again.
        return _without_ignore_packets(await within(
            asyncssh.connect(host.address, **options), ssh.connect_timeout + 2.0,
            discard=lambda conn: conn.close()))
    except asyncssh.HostKeyNotVerifiable as exc:
        fingerprint: str | None = None
        with contextlib.suppress(CorralError):
            fingerprint = (await fetch_host_key(host, ssh)).get_fingerprint("sha256")
        name, port = resolve_endpoint(host, ssh)
        recorded = [k.get_fingerprint("sha256") for k in
                    recorded_keys(Path(ssh.known_hosts_file).expanduser(), name, port)]
        if fingerprint is not None and recorded and fingerprint not in recorded:
            raise HostKeyChanged(host.name, host_pattern(name, port), recorded, fingerprint,
                                 ssh.known_hosts_file) from None
        raise HostKeyNotTrusted(host.name, host.address, fingerprint, str(exc),
                                ssh.known_hosts_file) from None
    except asyncssh.PermissionDenied as exc:
        raise AuthenticationFailed(
            host.name, host.address, host.port,
            f"authentication failed ({exc.reason}); check identity_file/user in cluster.toml, "
            "the ssh agent, and the host's authorized_keys",
        ) from None
    except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
        raise HostUnreachable(host.name, host.address, host.port, _cause(exc)) from None


def _without_ignore_packets(conn: asyncssh.SSHClientConnection
                            ) -> asyncssh.SSHClientConnection:
    """``conn`` without the empty ``SSH_MSG_IGNORE`` asyncssh sends before every packet once
    encrypting: a countermeasure for CBC mode's predictable IV (RFC 4251, 9.3.1), which no
    cipher of ``CIPHERS`` uses. It doubled the packets of a data stream: one more encryption,
    ``os.urandom`` and ``send`` call per 32 KiB, 18 % of the sending process's CPU
    (docs/benchmarks/data.md). asyncssh sends it through the connection's own ``send_packet``, so
    this
    connection's (and only this one's) drops it; every other packet passes unchanged."""
    send_packet = conn.send_packet

    def without_ignore(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if pkttype == MSG_IGNORE and args == _EMPTY_IGNORE:
            return
        send_packet(pkttype, *args, **kwargs)

    conn.send_packet = without_ignore  # type: ignore[method-assign]
    return conn


class SshTransport(CommandRunner):
    """Runs command lines on one host over one asyncssh connection."""

    def __init__(self, host: HostSection, conn: asyncssh.SSHClientConnection) -> None:
        self.host = host
        self._conn = conn
        self._ending: set[asyncio.Future[bool]] = set()
        """The commands given up on that are being ended (``_end_unless_done``)."""
        self.unconfirmed = 0
        """How many commands given up on the host never confirmed ended (``_ended``)."""
        self.banner: str | None = None
        """The first line the account's login shell printed on stdout before a command
        (``login_shell``), once one did; None: none seen."""

    def _wrapped(self, command: str, *, reads_channel: bool) -> str:
        """``command`` in its own process group, ended when the channel closes."""
        return in_own_group(command, reads_channel=reads_channel)

    async def _complete(self, command: str, sent: str, timeout: float, *,
                        input: bytes | None = None, feed: AsyncIterator[bytes] | None = None,
                        keep_open: bool = False) -> CompletedCommand:
        """Run ``sent`` with ``input`` (whole) or ``feed`` (chunk by chunk, each written when
        the channel has room: one chunk in flight) as its standard input; ``keep_open``:
        ``input`` is written without an end of file (the wrapper's watcher reads on)."""
        whole = input if feed is None and not keep_open else None
        opening = self._start(sent, input=whole, encoding=None)
        try:
            process = await asyncio.shield(opening)
            if keep_open and input:
                process.stdin.write(input)
            if feed is not None:
                with contextlib.suppress(BrokenPipeError):  # it ended early: its status says
                    process.stdin.write(input or b"")
                    async for chunk in feed:
                        process.stdin.write(chunk)
                        await process.stdin.drain()
                    process.stdin.write_eof()
            result = await within(process.wait(check=False), timeout)
        except asyncio.TimeoutError:
            raise RemoteTimeout(
                f"on {self.host.name}: `{short_command(command)}` did not finish within "
                f"{timeout:g} s"
            ) from None
        except (asyncssh.Error, OSError) as exc:
            raise ConnectionLost(f"connection to {self.host.name} lost: {_cause(exc)}") from None
        finally:
            self._end_unless_done(opening)
        status = result.exit_status if result.exit_status is not None else -1
        stdout, before = unframed(_bytes(result.stdout))
        stderr = unframed(_bytes(result.stderr))[0]
        if before is None:
            raise await self._refused(stdout + stderr)
        self._saw(before)
        return CompletedCommand(command=command, exit_status=status,
                                stdout=_text(stdout), stderr=_text(stderr))

    def _saw(self, before: bytes | str) -> None:
        """Keep the first banner the login shell printed before a command's frame."""
        if self.banner is None and before:  # control codes alone: shown as such
            self.banner = first_line(before) or ascii(_text(before)[:40])[1:-1]

    async def _refused(self, said: bytes | str) -> LoginShellRefused:
        """The error for a login shell that did not run ``exec sh -c``, naming that shell as
        its ``$SHELL`` says (asked unframed: the one command any shell's ``-c`` runs)."""
        shell = ""
        with contextlib.suppress(asyncssh.Error, OSError, asyncio.TimeoutError):
            answer = await within(self._conn.run(SHELL_QUESTION, check=False), 10.0)
            shell = shell_answer(_text(answer.stdout))
        return refused(self.host.name, self.host.user, shell, first_line(said))

    async def stream(self, command: str) -> AsyncIterator[str]:
        """Yield ``command``'s stdout lines; see ``Transport.stream``."""
        sent, env_input = with_host_env(
            self.host.env, self._wrapped(command, reads_channel=True), None)
        opening = self._start(sent, encoding="utf-8", errors="replace")
        try:
            proc = await asyncio.shield(opening)
            if env_input:
                proc.stdin.write(env_input.decode())
            before: list[str] | None = []
            async for line in proc.stdout:
                text = line.rstrip("\n")
                if before is None:
                    yield text
                elif is_frame(text):  # what the login shell printed ends here
                    self._saw("".join(before) + text[:-len(FRAME)])
                    before = None
                else:
                    before.append(line)
            if before is not None:
                raise await self._refused("".join(before))
        except (asyncssh.Error, OSError) as exc:
            raise ConnectionLost(f"connection to {self.host.name} lost: {_cause(exc)}") from None
        finally:
            self._end_unless_done(opening)

    def _start(self, sent: str, **options: Any) -> asyncio.Future[Any]:
        """The opening of ``sent``'s channel, tracked from its first moment: a caller that is
        cancelled while it opens (or later) hands it to ``_end_unless_done``, so the command
        it may have started on the host is ended all the same, never left unseen."""
        return asyncio.ensure_future(self._conn.create_process(framed(sent), **options))

    def _end_unless_done(self, opening: asyncio.Future[Any]) -> None:
        """End the command ``opening`` started unless it ran to its end: in the background,
        so that a Ctrl-C's stop goes on meanwhile; ``settle`` and ``close`` wait for it."""
        if opening.done() and (opening.cancelled() or opening.exception() is not None
                               or opening.result().exit_status is not None):
            return  # no channel, or a command that ended by itself
        ending = asyncio.ensure_future(_ended(opening))
        self._ending.add(ending)
        ending.add_done_callback(self._ended_one)

    def _ended_one(self, ending: asyncio.Future[bool]) -> None:
        self._ending.discard(ending)
        if ending.cancelled() or ending.exception() is not None or not ending.result():
            self.unconfirmed += 1

    async def settle(self) -> int:
        """Wait until every command given up on has ended (``_ended``: ``END_WAIT_S`` at most
        each); how many of them the host never confirmed ended."""
        while self._ending:
            await asyncio.wait(set(self._ending))
        return self.unconfirmed

    async def close(self) -> None:
        """Close the connection once every command given up on has ended (commands started
        in the background, the launchers, keep running)."""
        with contextlib.suppress(Exception):
            await self.settle()
        self._conn.close()
        with contextlib.suppress(Exception):
            await within(self._conn.wait_closed(), 5.0)


END_WAIT_S = 2.0
"""How long a command given up on (interrupted, timed out, its stream closed) is waited for
after the end of its input, and again after its channel is closed, before it counts as not
confirmed ended."""


async def _ended(opening: asyncio.Future[Any]) -> bool:
    """End the command ``opening`` started (or starts: an open under way is waited for,
    ``END_WAIT_S`` at most) and whether the host confirmed it ended.

    The end of its input makes the host-side wrapper (``remote.hosts.own_group``) KILL its
    group, and a command fed by corral reads to its end; sshd closes the channel only once
    the command has exited, so a closed channel is the host's word that it is gone."""
    done, _ = await asyncio.wait({opening}, timeout=END_WAIT_S)
    if not done:
        opening.cancel()
        return False
    if opening.cancelled() or opening.exception() is not None:
        return True  # no channel: nothing started
    process = opening.result()
    try:
        with contextlib.suppress(Exception):
            process.stdin.write_eof()
        for _ in range(2):  # the end of its input, then its channel closed as well
            with contextlib.suppress(asyncio.TimeoutError):
                await within(process.wait_closed(), END_WAIT_S)
                return True
            process.close()
        return False
    finally:
        process.close()


def _bytes(data: object) -> bytes:
    if data is None:
        return b""
    return data if isinstance(data, bytes) else str(data).encode()


def _text(data: object) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return str(data)
