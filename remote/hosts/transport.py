"""How corral runs a command on a host: the ``Transport`` protocol and its local implementation.

Every host, remote or ``local``, is driven through the same narrow interface: run a POSIX ``sh``
command line and get a ``CompletedCommand`` back, or stream a long-running command's output
line by line. ``SshTransport`` (``remote.hosts.ssh``) does it over one asyncssh connection;
``LocalTransport`` runs the very same command lines through ``sh -c`` here, so a ``local`` host
behaves exactly like a remote one (same quoting, same files, same process groups).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

from remote.config.cluster import HostSection
from remote.hosts.command_errors import (
    CompletedCommand,
    RemoteCommandError,
    RemoteTimeout,
    short_command,
)
from remote.hosts.waits import within


def _kill_group(pid: int) -> None:
    """KILL a command started in its own session and whatever it started there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


REAP_S = 5.0
"""How long a KILLed command is waited for (it ends in milliseconds) whatever cancels come."""


async def killed_and_reaped(proc: asyncio.subprocess.Process) -> None:
    """KILL ``proc``'s group and wait until asyncio has seen it end (``returncode`` set), even
    when this is cancelled meanwhile (a cancel is raised once it has, within ``REAP_S``).

    A second cancel used to land in the wait after the KILL (corral's exit cancels every task
    left, the tails still closing and their waits included): the child then ended unseen, its
    pipes outlived the event loop, and corral printed "Exception ignored ... Event loop is
    closed" as it exited after a completed run."""
    _kill_group(proc.pid)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REAP_S
    interrupted = False
    waiting: asyncio.Future[int] | None = None
    while proc.returncode is None and (left := deadline - loop.time()) > 0:
        if waiting is None or waiting.done():  # anew if the teardown cancelled every task
            waiting = asyncio.ensure_future(proc.wait())
        try:
            await asyncio.wait({waiting}, timeout=left)
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError


async def run_process(argv: list[str], host: str, command: str, timeout: float, *,
                      input: bytes | None = None, feed: AsyncIterator[bytes] | None = None,
                      pump: Callable[[int], None] | None = None) -> CompletedCommand:
    """Run ``argv`` on this machine, in a process group of its own, with ``input`` whole and then
    ``feed``'s chunks (each written when the pipe has room), or what ``pump`` writes into the
    pipe it is given (in a thread, off the loop: ``data_sender.pump``), as its standard input,
    its output read as it comes (a full pipe never stalls it). ``command`` (what runs on
    ``host``) names it in a timeout; ``timeout`` counts from the end of the input. Killed with
    its group when interrupted or late (``LocalTransport``'s commands; a stream through ``ssh``)."""
    fed = input is not None or feed is not None
    reading, writing = os.pipe() if pump is not None else (None, None)
    stdin = asyncio.subprocess.PIPE if fed else asyncio.subprocess.DEVNULL
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=reading if reading is not None else stdin,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except BaseException:
        _close(writing)
        raise
    finally:
        _close(reading)  # the child's now: its end alone keeps the pipe open
    assert proc.stdout is not None and proc.stderr is not None
    out, err = asyncio.ensure_future(proc.stdout.read()), asyncio.ensure_future(proc.stderr.read())
    try:
        if feed is not None:  # the timeout counts from the feed's end
            await _write_input(proc, input, feed)
        if pump is not None and writing is not None:
            await _pumped(pump, writing)
        writing_input = _write_input(proc, input, None)  # without a feed: all of it, here
        said, errors, *_ = await within(  # a whole input within the timeout
            asyncio.gather(out, err, proc.wait(), writing_input), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError, Exception) as exc:
        await killed_and_reaped(proc)
        if not isinstance(exc, asyncio.TimeoutError):
            raise
        after = " of its last byte" if feed is not None or pump is not None else ""
        raise RemoteTimeout(f"on {host}: `{short_command(command)}` did not finish within "
                            f"{timeout:g} s{after}") from None
    finally:
        for reading_output in (out, err):
            reading_output.cancel()
    return CompletedCommand(
        command=command, exit_status=proc.returncode if proc.returncode is not None else -1,
        stdout=said.decode(errors="replace"), stderr=errors.decode(errors="replace"))


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


async def _pumped(pump: Callable[[int], None], pipe: int) -> None:
    """``pump(pipe)`` in a thread that owns the pipe and closes it after. Interrupted, the
    caller kills the process: its end closes, and the pump's next write fails and ends it. A
    process that stops reading is not an error here (its status says)."""
    def run() -> None:
        try:
            with contextlib.suppress(BrokenPipeError):
                pump(pipe)
        finally:
            os.close(pipe)

    await asyncio.to_thread(run)


async def _write_input(proc: asyncio.subprocess.Process, input: bytes | None,
                       feed: AsyncIterator[bytes] | None) -> None:
    """``input``, then ``feed``'s chunks, to ``proc``'s standard input (if it has one), closed
    after; a command that stops reading is not an error here (its status says). Nothing once
    it is closed (written already)."""
    if proc.stdin is None or proc.stdin.is_closing():
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(input or b"")
        await proc.stdin.drain()
        if feed is not None:
            async for chunk in feed:
                proc.stdin.write(chunk)
                await proc.stdin.drain()
        proc.stdin.close()


def shell_path(path: str) -> str:
    """``path`` quoted for a POSIX shell, a leading ``~`` still expanded by that shell."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def env_prefix(env: Mapping[str, str]) -> str:
    """``env K=V ...`` (quoted, sorted) to put before a command; empty for no variables.

    Only for corral's own variables: their values are on the host's command line, which every
    local user can read (``/proc/PID/cmdline``). A host's ``env`` table goes through
    ``with_host_env`` instead."""
    if not env:
        return ""
    return "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items())) + " "


ENV_READ_LIMIT_S = 60
"""How long a host's shell waits for its ``env`` values on stdin before it gives up (corral
died or was interrupted before sending them): no helper is left waiting on an open channel."""

ENV_ARRIVED = "CORRAL_ENV_ARRIVED"
"""The shell variable the last line of the ``env`` input sets: the values arrived whole."""


def with_host_env(env: Mapping[str, str], command: str,
                  input: bytes | None) -> tuple[str, bytes | None]:
    """``command`` and its standard input with the host's ``env`` table delivered on that input.

    The values (tokens, passwords) never appear on a command line: the shell reads exactly
    their bytes from its standard input (``dd`` one byte at a time, so whatever input the
    command itself reads stays unread) and exports them; the command and everything it starts
    inherit them. Only the names of the variables are in the command line. When the values do
    not arrive whole within ``ENV_READ_LIMIT_S`` (corral was interrupted, killed, or closed
    the channel), the command does not run: the shell exits 125 without it.
    """
    if not env:
        return command, input
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    data = (exports + f"{ENV_ARRIVED}=1\n").encode()
    prefix = (
        f't=; command -v timeout >/dev/null 2>&1 && t="timeout {ENV_READ_LIMIT_S}"; '
        f'eval "$($t dd bs=1 count={len(data)} 2>/dev/null)"; '
        f'[ "${{{ENV_ARRIVED}:-}}" = 1 ] || {{ echo "corral: the host env did not arrive" >&2; '
        f"exit 125; }}; unset {ENV_ARRIVED} t; ")
    return prefix + command, data + (input or b"")


class Transport(Protocol):
    """One host's command channel."""

    host: HostSection

    async def run(
        self, command: str, *, check: bool = False, timeout: float = 60.0,
        input: bytes | None = None,
    ) -> CompletedCommand:
        """Run a POSIX sh command line; raise ``RemoteTimeout`` after ``timeout`` seconds."""
        ...

    async def run_fed(self, command: str, feed: AsyncIterator[bytes], *,
                      timeout: float = 60.0) -> CompletedCommand:
        """Run ``command`` with ``feed``'s chunks as its standard input, each written when the
        channel has room (memory bounded by a chunk, whatever the total); ``timeout`` counts
        from the end of the feed."""
        ...

    def stream(self, command: str) -> AsyncIterator[str]:
        """Run a long-lived command and yield its stdout lines (without newline) as they come.

        Closing the iterator closes the command's stdin and channel; the command is expected to
        exit when its stdin reaches end of file."""
        ...

    async def settle(self) -> int:
        """Wait until every command given up on (interrupted, timed out) has ended; how many
        of them the host never confirmed ended."""
        ...

    async def close(self) -> None:
        """Release the connection (idempotent) once every command given up on has ended."""
        ...


class CommandRunner:
    """``run`` and ``run_fed`` of a ``Transport``, on top of its ``_complete``: the host's
    ``env`` values go first on the command's standard input, then what the caller sends."""

    host: HostSection

    async def run(
        self, command: str, *, check: bool = False, timeout: float = 60.0,
        input: bytes | None = None,
    ) -> CompletedCommand:
        """Run ``command``; see ``Transport.run``."""
        # Without input of its own, the command is wrapped (where the transport needs it) to
        # end when the channel does; the channel then stays open for as long as it runs.
        alone = input is None
        sent, input = with_host_env(
            self.host.env, self._wrapped(command, reads_channel=False) if alone else command,
            input)
        done = await self._complete(command, sent, timeout, input=input, keep_open=alone)
        if check and not done.ok:
            raise RemoteCommandError(self.host.name, done)
        return done

    async def run_fed(self, command: str, feed: AsyncIterator[bytes], *,
                      timeout: float = 60.0) -> CompletedCommand:
        """Run ``command`` fed by ``feed``; see ``Transport.run_fed``."""
        sent, env_input = with_host_env(self.host.env, command, None)
        return await self._complete(command, sent, timeout, input=env_input or b"", feed=feed)

    def _wrapped(self, command: str, *, reads_channel: bool) -> str:
        """``command`` as this transport sends a command run without input of its own (the
        SSH transport: ``remote.hosts.own_group.in_own_group``); here, as it is."""
        return command

    async def _complete(self, command: str, sent: str, timeout: float, *,
                        input: bytes | None = None, feed: AsyncIterator[bytes] | None = None,
                        keep_open: bool = False) -> CompletedCommand:
        """Run ``sent`` (``command`` with the env prefix) with ``input`` whole, then ``feed``'s
        chunks, as its standard input; ``keep_open``: its standard input is not closed after
        ``input`` (a wrapped command watches it)."""
        raise NotImplementedError


class LocalTransport(CommandRunner):
    """Runs command lines on this machine with ``sh -c``, like a remote host would."""

    def __init__(self, host: HostSection) -> None:
        self.host = host

    async def _complete(self, command: str, sent: str, timeout: float, *,
                        input: bytes | None = None, feed: AsyncIterator[bytes] | None = None,
                        keep_open: bool = False) -> CompletedCommand:
        """Run ``sent`` through ``sh -c`` (``run_process``)."""
        return await run_process(["sh", "-c", sent], self.host.name, command, timeout,
                                 input=input, feed=feed)

    async def stream(self, command: str) -> AsyncIterator[str]:
        """Yield ``command``'s stdout lines; see ``Transport.stream``."""
        sent, env_input = with_host_env(self.host.env, command, None)
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", sent, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            limit=1 << 22, start_new_session=True,
        )
        assert proc.stdout is not None and proc.stdin is not None
        if env_input:
            proc.stdin.write(env_input)
        try:
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    break
                yield raw.decode(errors="replace").rstrip("\n")
        finally:
            # End of stdin tells the command to stop; kill it if it does not within a moment.
            with contextlib.suppress(Exception):
                proc.stdin.close()
            try:
                await within(asyncio.shield(proc.wait()), 5.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                await killed_and_reaped(proc)

    async def settle(self) -> int:
        """Nothing to wait for: a command given up on here is killed and reaped at once
        (``run_process``)."""
        return 0

    async def close(self) -> None:
        """Nothing to release for the local machine."""
