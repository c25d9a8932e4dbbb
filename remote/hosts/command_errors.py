"""What running a command on a host returns or raises: ``CompletedCommand`` and the errors
every transport (``remote.hosts.transport``, ``remote.hosts.ssh``) raises alike."""

from __future__ import annotations

from dataclasses import dataclass

from profiles.user_errors import CorralError

STDERR_TAIL_CHARS = 600
"""How much of a failed command's stderr an error message quotes."""


@dataclass(frozen=True, kw_only=True)
class CompletedCommand:
    """A command that ran to its end on a host."""

    command: str
    """The command line as sent to the host's shell."""
    exit_status: int
    """Its exit status (negative or 255 when killed by a signal or the connection died)."""
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """True for exit status 0."""
        return self.exit_status == 0


class RemoteCommandError(CorralError):
    """A command run with ``check=True`` exited non-zero."""

    title = "remote command failed"

    def __init__(self, host: str, done: CompletedCommand) -> None:
        tail = done.stderr.strip()[-STDERR_TAIL_CHARS:] or done.stdout.strip()[-STDERR_TAIL_CHARS:]
        super().__init__(
            f"on {host}: `{short_command(done.command)}` exited with status {done.exit_status}"
            + (f":\n{tail}" if tail else "")
        )
        self.host = host
        self.completed = done


class RemoteTimeout(CorralError):
    """A command did not finish within its timeout."""

    title = "remote command timed out"


class HostUnreachable(CorralError):
    """Connecting to a host failed or timed out."""

    title = "host unreachable"

    def __init__(self, host: str, address: str, port: int | None, cause: str) -> None:
        where = f"{address}:{port}" if port else address
        super().__init__(
            f"cannot reach host {host!r} at {where}: {cause}. Check that the machine is up, "
            f"that sshd listens there, and the address/port in cluster.toml (or ~/.ssh/config)."
        )
        self.host = host


class HostKeyNotTrusted(CorralError):
    """The host presented a key that is not in known_hosts (or differs from it)."""

    title = "host key not trusted"

    def __init__(self, host: str, address: str, fingerprint: str | None, cause: str,
                 known_hosts: str = "~/.ssh/known_hosts") -> None:
        seen = f" It presented the key {fingerprint}." if fingerprint else ""
        super().__init__(
            f"the host key of {host!r} ({address}) is not trusted: {cause.rstrip('.')}.{seen} "
            f"If that is the right key, trust it with `corral trust {host}` (which adds it to "
            f"{known_hosts})."
        )
        self.host = host
        self.fingerprint = fingerprint


class HostKeyChanged(HostKeyNotTrusted):
    """The host presented a key other than the one known_hosts records for it."""

    title = "HOST KEY CHANGED"

    def __init__(self, host: str, address: str, recorded: list[str], presented: str,
                 known_hosts: str) -> None:
        CorralError.__init__(
            self,
            f"the host key of {host!r} ({address}) has CHANGED: {known_hosts} records "
            f"{', '.join(recorded)}, the host now presents {presented}. Someone may be "
            "intercepting the connection (or the host was reinstalled and got a new key). "
            f"Connections to it are refused. Only if you know why it changed: `corral trust "
            f"{host}` shows the new key and replaces the old one.")
        self.host = host
        self.fingerprint = presented


def short_command(command: str, limit: int = 160) -> str:
    """``command`` as an error message quotes it: cut to ``limit`` characters."""
    return command if len(command) <= limit else command[: limit - 3] + "..."
