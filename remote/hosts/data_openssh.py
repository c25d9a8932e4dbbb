"""A host's data stream through OpenSSH's own client, ``ssh``, where it carries corral's
settings whole.

asyncssh frames and encrypts every 32 KiB packet in Python: a stream of 512 MiB cost its
process 1.2–1.3 s of CPU on the 2-core VM, OpenSSH's ``ssh`` 0.7 s for the same stream, same
cipher, its handshake included (docs/benchmarks/data.md). ``rsync -a`` runs one ``ssh`` per host;
so does
the data sync for a host that lacks much (``data_sender.SENDER_MIN_BYTES``), when ``ssh`` can
reach it exactly as corral's own connection does:

- host keys verified against corral's known_hosts file alone (``[ssh] known_hosts_file``;
  never with ``known_hosts = "insecure"``), nothing written to it, never a prompt;
- no proxy (``ProxyJump``, ``ProxyCommand`` in the config file): a jump host's key would be
  checked by OpenSSH's rules, not corral's, so such a host keeps asyncssh;
- the same config file, user, port, identity and ciphers (``ssh.CIPHERS``), the same connect
  timeout and keepalives; paths ``ssh -o`` takes as they are (no space, quote or ``%``).

What reaches the host is what asyncssh would send: the same command line (framed for any login
shell: ``login_shell``), the host's ``env``
values on its standard input (``with_host_env``), never on a command line. ``ssh`` runs as a
``local`` host's commands do (``transport.run_process``): interrupted, it is killed, and the
closed connection ends the host's receiver, which removes its partial file. A stream that
``ssh`` could not open (no frame line: ``login_shell``; or its own exit status, 255, with no
answer from the receiver) returns None: the caller sends through asyncssh instead, whose errors
name the fix in corral's words.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import asyncssh

from remote.config.cluster import HostSection, SshSection
from remote.hosts.command_errors import CompletedCommand
from remote.hosts.login_shell import framed, unframed
from remote.hosts.ssh import CIPHERS
from remote.hosts.transport import run_process

CLIENT: str | None = "ssh"
"""OpenSSH's client, looked up on the PATH (None: never used; the bench's asyncssh arm)."""
OWN_FAILURE = 255
"""``ssh``'s exit status when it failed itself (could not connect, authenticate, verify)."""
_PLAIN_PATH = re.compile(r"[\w./@+,:=-]+")
"""A path ``ssh -o Key=PATH`` and ``-i`` take as it is: no space, quote or ``%`` token."""


def openssh_argv(host: HostSection, ssh: SshSection, command: str) -> list[str] | None:
    """The ``ssh`` command line that runs ``command`` on ``host`` with corral's settings, or
    None where ``ssh`` cannot carry them whole (no client, insecure host keys, a proxy, a
    path it would read otherwise)."""
    client = shutil.which(CLIENT) if CLIENT else None
    if client is None or ssh.known_hosts == "insecure" or host.is_local:
        return None
    known = Path(ssh.known_hosts_file).expanduser()
    config = Path(ssh.config_file).expanduser()
    config_arg = str(config) if config.is_file() else "/dev/null"
    identity = Path(host.identity_file).expanduser() if host.identity_file else None
    paths = [str(known), config_arg] + ([str(identity)] if identity else [])
    if not known.is_file() or not all(_PLAIN_PATH.fullmatch(p) for p in paths):
        return None
    try:  # the config file as asyncssh reads it: a proxy keeps the host on asyncssh
        resolved = asyncssh.SSHClientConnectionOptions(
            config=[config_arg] if config.is_file() else [], host=host.address,
            port=host.port if host.port is not None else ())
    except (OSError, ValueError, asyncssh.Error):
        return None
    if resolved.tunnel or resolved.proxy_command:
        return None
    options = {"BatchMode": "yes", "StrictHostKeyChecking": "yes",
               "UserKnownHostsFile": str(known), "GlobalKnownHostsFile": "/dev/null",
               "UpdateHostKeys": "no", "CheckHostIP": "no", "Ciphers": ",".join(CIPHERS),
               "ConnectTimeout": str(max(1, round(ssh.connect_timeout))),
               "ServerAliveInterval": str(round(ssh.keepalive)), "ServerAliveCountMax": "3",
               "ClearAllForwardings": "yes", "ControlMaster": "no", "ControlPath": "none"}
    argv = [client, "-T", "-F", config_arg]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}"]
    if host.port is not None:
        argv += ["-p", str(host.port)]
    if host.user is not None:
        argv += ["-l", host.user]
    if identity is not None:
        argv += ["-i", str(identity)]
    return [*argv, "--", host.address, framed(command)]


def openssh_hosts(hosts: Iterable[HostSection], ssh: SshSection) -> frozenset[str]:
    """The names of ``hosts`` that ``ssh`` can reach with corral's settings."""
    return frozenset(h.name for h in hosts if openssh_argv(h, ssh, "true") is not None)


async def run_openssh(host: str, argv: list[str], command: str, pump: Callable[[int], None], *,
                      timeout: float) -> CompletedCommand | None:
    """Run ``argv`` (``openssh_argv``'s, for ``command``) with what ``pump`` writes into its
    pipe as the host command's standard input (``run_process``); None: ``ssh`` could not open
    the stream."""
    done = await run_process(argv, host, command, timeout, pump=pump)
    stdout, before = unframed(done.stdout.encode())
    if before is None or (done.exit_status == OWN_FAILURE and not stdout.strip()):
        return None  # ssh failed, or the login shell ran no sh: asyncssh's errors say which
    return dataclasses.replace(done, stdout=stdout.decode(),
                               stderr=unframed(done.stderr.encode())[0].decode())
