"""A host's data stream: from the master's own process, through OpenSSH's ``ssh``, or from a
sender process of its own.

asyncssh encrypts and frames every 32 KiB packet in Python, on the one thread of the process
that holds the connection: three hosts fed from one process share one core, where ``rsync -a``
runs one OpenSSH client per host. A host with at least ``SENDER_MIN_BYTES`` to receive is fed
by a process of its own (``python -m remote.hosts.data_sender``), which opens its own
connection to the host (the same ``[ssh]`` settings, keys and known_hosts as the master's)
and streams the files from disk: hosts then run on separate cores, and each sender's memory
stays bounded by a chunk as the master's does. Where OpenSSH's client can reach the host with
corral's settings (``remote.hosts.data_openssh``), the master feeds it through ``ssh``
instead, as ``rsync -a`` does: half the CPU of asyncssh's stream, and no interpreter to start;
its files moved into ``ssh``'s pipe by the kernel from a thread (``pump``), off the loop.

The master hands the sender its job (``SendJob``, pickled, length first) on its standard
input and keeps that input open: a sender whose input ends (the master gone, however it
ended) stops at once, and its closed connection ends the host's receiver, which removes its
partial file. The sender writes one JSON line per ``REPORT_EVERY_S`` (bytes and files sent)
and a last line with the receiver's exit status and output, or the error that stopped it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import json
import os
import pickle
import resource
import struct
import sys
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from profiles.user_errors import CorralError
from remote.config.cluster import HostSection, SshSection
from remote.hosts.command_errors import CompletedCommand
from remote.hosts.data_openssh import openssh_argv, run_openssh
from remote.hosts.data_tree import CHUNK_BYTES, DataFile
from remote.hosts.transport import Transport, with_host_env

SENDER_MIN_BYTES = 64 << 20
"""A host that lacks fewer bytes than this is fed from the master's own process: a sender
costs an interpreter start, asyncssh's import and an SSH handshake (about half a second)."""
MASTER_FEEDS = 1
"""Of the hosts that lack ``SENDER_MIN_BYTES`` or more, how many (the first) the master's own
process feeds, the rest a sender process each: the master's process is a core's worth of
sending as well, and a sender's interpreter with asyncssh holds ~45 MiB (docs/benchmarks/data.md):
three
such hosts cost two senders, not three."""
REPORT_EVERY_S = 0.25
"""How often a sender reports what it has sent (the master's progress lines read it)."""
_LENGTH = struct.Struct(">Q")


class DataSyncError(CorralError):
    """A host cannot take the run's data, or its sync failed."""


class Tally(Protocol):
    """What a stream counts as it goes (``data_sync.DataProgress`` is one)."""

    sent_bytes: int
    sent_files: int
    sender_peak_kib: int
    """The peak resident memory of the sender process that fed the host (0: none did)."""


@dataclass(frozen=True, kw_only=True)
class SendJob:
    """Everything a sender process needs: the host, how to reach it, what to run there and
    what to feed it."""

    host: HostSection
    ssh: SshSection | None
    """How to reach it (the cluster's ``[ssh]``); None: fed from the master's process."""
    command: str
    """The receiver's command line (the host's ``env`` prefix is added as for any command)."""
    head: Mapping[str, object]
    """The receiver's first line (the files it gets, the link list to write)."""
    files: tuple[DataFile, ...]
    timeout: float
    """How long the receiver may take after the last byte (its last hash check)."""


async def feed(head: Mapping[str, object], files: tuple[DataFile, ...] | list[DataFile],
               tally: Tally, *, blocking: bool = False, first: bytes = b"") -> AsyncIterator[bytes]:
    """The receiver's input: ``head`` as one JSON line, then each file's bytes read from disk
    ``CHUNK_BYTES`` at a time (one chunk in flight: memory bounded whatever the size). Reads
    go to a thread, so a slow disk never stalls the master's loop; ``blocking``: read on the
    loop itself (a sender process, whose loop does nothing else: a thread hand-off per chunk
    is a wake-up, a scheduler wait on a loaded machine). ``first``: bytes before the head (the
    host's ``env`` values, where no transport adds them)."""
    yield first + (json.dumps(head) + "\n").encode()
    for file in files:
        with file.source.open("rb") as source:
            _unchanged(file, source)
            left = file.sent_size
            for offset, length in file.sent_spans():
                source.seek(offset)
                while length:  # exactly the size listed: a file growing meanwhile is refused
                    size = min(length, CHUNK_BYTES)
                    chunk = source.read(size) if blocking else await asyncio.to_thread(
                        source.read, size)
                    if not chunk:
                        raise DataSyncError(f"{file.source} shrank while it was being sent")
                    left, length = left - len(chunk), length - len(chunk)
                    tally.sent_bytes += len(chunk)
                    if not left:  # before its last byte leaves: the host keeps none of it else
                        _unchanged(file, source)
                    yield chunk
        tally.sent_files += 1


PIPE_BYTES = 1 << 20
"""The capacity ``pump`` asks for its pipe (Linux's most for a user by default): ``ssh`` has a
MiB to go on while the pump waits for a core, not 64 KiB, and reads it in fewer calls."""
TAIL_BYTES = 64 << 10
"""Of each file ``pump`` sends, the last bytes it reads and writes itself, once it has checked
the file unchanged (as ``feed`` does before a file's last byte leaves)."""


def pump(out: int, head: Mapping[str, object], files: tuple[DataFile, ...], tally: Tally, *,
         first: bytes = b"") -> None:
    """``feed``'s bytes written into the pipe ``out``, blocking (``transport.run_process`` runs
    it in a thread): each file but its last ``TAIL_BYTES`` moved from the page cache into the
    pipe by the kernel (``os.splice``: no copy into this process, none of its CPU per byte,
    where ``feed`` read and wrote every chunk through the event loop: as much CPU as the three
    ``ssh`` it fed, docs/benchmarks/data.md), then the tail, read once the file is checked
    unchanged."""
    if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux; a larger pipe where the system allows one
        with contextlib.suppress(OSError):
            fcntl.fcntl(out, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    _write_all(out, first + (json.dumps(head) + "\n").encode())
    for file in files:
        if file.spans is not None:  # a recipe's chunks: few, scattered, read and written
            _pump_spans(out, file, tally)
            continue
        with file.source.open("rb", buffering=0) as source:
            _unchanged(file, source)
            done, bulk = 0, max(file.size - TAIL_BYTES, 0)
            while done < bulk:
                moved = _move(source.fileno(), out, done, min(bulk - done, CHUNK_BYTES))
                if not moved:
                    raise DataSyncError(f"{file.source} shrank while it was being sent")
                done += moved
                tally.sent_bytes += moved
            tail = os.pread(source.fileno(), file.size - done, done)
            if len(tail) != file.size - done:
                raise DataSyncError(f"{file.source} shrank while it was being sent")
            _unchanged(file, source)  # before its last bytes leave: the host keeps none else
            _write_all(out, tail)
            tally.sent_bytes += len(tail)
        tally.sent_files += 1


def _pump_spans(out: int, file: DataFile, tally: Tally) -> None:
    """The spans of ``file`` the stream carries, checked unchanged before the last leaves."""
    with file.source.open("rb", buffering=0) as source:
        _unchanged(file, source)
        for offset, length in file.sent_spans():
            for at in range(offset, offset + length, CHUNK_BYTES):
                chunk = os.pread(source.fileno(), min(CHUNK_BYTES, offset + length - at), at)
                if len(chunk) != min(CHUNK_BYTES, offset + length - at):
                    raise DataSyncError(f"{file.source} shrank while it was being sent")
                if at + len(chunk) == offset + length and (offset, length) == file.sent_spans()[-1]:
                    _unchanged(file, source)
                _write_all(out, chunk)
                tally.sent_bytes += len(chunk)
    tally.sent_files += 1


def _move(source: int, out: int, offset: int, count: int) -> int:
    """Up to ``count`` bytes of ``source`` from ``offset`` into the pipe ``out``: spliced,
    or read and written where splicing is not to be had (not Linux; a file system without)."""
    if hasattr(os, "splice"):
        try:
            return int(os.splice(source, out, count, offset_src=offset))
        except OSError as exc:  # only "not supported here" falls back; a closed pipe ends it
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
    chunk = os.pread(source, count, offset)
    _write_all(out, chunk)
    return len(chunk)


def _write_all(out: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(out, view):]


def _unchanged(file: DataFile, source: BinaryIO) -> None:
    """Refuse a file that changed since it was listed: a file not hashed here is named by
    the digest of the bytes the host got, so a torn read must never reach it."""
    info = os.fstat(source.fileno())
    if (info.st_size, info.st_mtime_ns) != (file.size, file.mtime_ns):
        raise DataSyncError(f"{file.source} changed while it was being sent: run again once "
                            "nothing writes to it")


def fed_by_senders(needs: Mapping[str, int], openssh: Collection[str] = ()
                   ) -> frozenset[str]:
    """The hosts, of ``needs`` (host → bytes it lacks, in the cluster's order), fed by a
    process of their own (``ssh`` for those in ``openssh``, a sender for the others): those
    that lack ``SENDER_MIN_BYTES`` or more, but the first ``MASTER_FEEDS`` of those outside
    ``openssh`` (an ``ssh`` costs less than the master's own stream: it feeds none of those)."""
    large = [host for host, need in needs.items() if need >= SENDER_MIN_BYTES]
    own = [host for host in large if host not in openssh]
    return frozenset(large) - frozenset(own[:MASTER_FEEDS])


async def send(transport: Transport, job: SendJob, tally: Tally) -> CompletedCommand:
    """Run the receiver on ``transport``'s host fed with ``job``'s files, for an SSH host that
    lacks ``SENDER_MIN_BYTES`` or more (``job.ssh`` given) through ``ssh`` where it can reach
    the host with corral's settings, else from a sender process of its own; from this
    process otherwise."""
    size = sum(f.sent_size for f in job.files)
    if job.ssh is None or transport.host.is_local or size < SENDER_MIN_BYTES:
        return await transport.run_fed(job.command, feed(job.head, job.files, tally),
                                       timeout=job.timeout)
    sent, env_input = with_host_env(job.host.env, job.command, None)
    argv = openssh_argv(job.host, job.ssh, sent)
    if argv is not None:
        done = await run_openssh(job.host.name, argv, job.command, functools.partial(
            pump, head=job.head, files=job.files, tally=tally, first=env_input or b""),
            timeout=job.timeout)
        if done is not None:
            return done
        tally.sent_bytes = tally.sent_files = 0  # ssh could not open it: asyncssh, anew
    return await _from_sender(job, tally)


async def _from_sender(job: SendJob, tally: Tally) -> CompletedCommand:
    """``job`` run by a sender process; its reports update ``tally``. The sender is killed
    (it is this process's own child) if this is interrupted; one that ends without its last
    line is an error naming the host."""
    root = str(Path(__file__).resolve().parent.parent.parent)  # where ``remote`` is imported
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    # Started in corral's own folder: ``-m`` puts the working directory first on the path,
    # and the user's (a folder with a ``remote/`` of its own) must not shadow corral's code.
    job = replace(job, files=tuple(replace(f, source=f.source.absolute()) for f in job.files))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "remote.hosts.data_sender", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=root)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        packed = pickle.dumps(job)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(_LENGTH.pack(len(packed)) + packed)
            await proc.stdin.drain()
        last: dict[str, Any] = {}
        async for raw in proc.stdout:
            last = json.loads(raw)
            tally.sent_bytes, tally.sent_files = last["sent"], last["files"]
        tally.sender_peak_kib = int(last.get("peak_kib", 0))
        err = (await proc.stderr.read()).decode(errors="replace")
        status = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        proc.stdin.close()
    return _outcome(job.host.name, job.command, last, status, err)


def _outcome(host: str, command: str, last: Mapping[str, object], status: int,
             err: str) -> CompletedCommand:
    """The receiver's result from the sender's last line; ``DataSyncError`` without one."""
    if isinstance(last.get("error"), str):
        raise DataSyncError(f"data sync to {host}: {last['error']}")
    done = last.get("done")
    if not isinstance(done, dict):
        why = f"exit status {status}" if status >= 0 else f"killed by signal {-status}"
        said = f": {err.strip()[-300:]}" if err.strip() else ""
        raise DataSyncError(f"data sync to {host}: its sender process ended ({why}) before "
                            f"the host's receiver did{said}")
    return CompletedCommand(command=command, exit_status=int(done["exit_status"]),
                            stdout=str(done["stdout"]), stderr=str(done["stderr"]))


# The sender process itself.

@dataclass
class _Counts:
    sent_bytes: int = 0
    sent_files: int = 0
    sender_peak_kib: int = 0


async def _report(counts: _Counts) -> None:
    while True:
        await asyncio.sleep(REPORT_EVERY_S)
        _say({"sent": counts.sent_bytes, "files": counts.sent_files})


def _say(line: Mapping[str, object]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def _orphaned(reader: asyncio.StreamReader) -> None:
    """Returns when the master closes this process's input (it is done with it, or gone)."""
    await reader.read()


async def _run(job: SendJob, counts: _Counts) -> CompletedCommand:
    from remote.hosts.ssh import SshTransport, connect  # asyncssh: the sender's own import

    assert job.ssh is not None
    transport = SshTransport(job.host, await connect(job.host, job.ssh))
    try:
        return await transport.run_fed(
            job.command, feed(job.head, job.files, counts, blocking=True), timeout=job.timeout)
    finally:
        await transport.close()


async def _sender_main() -> None:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    length = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))[0]
    job: SendJob = pickle.loads(await reader.readexactly(length))
    counts = _Counts()
    reporting = asyncio.ensure_future(_report(counts))
    work = asyncio.ensure_future(_run(job, counts))
    gone = asyncio.ensure_future(_orphaned(reader))
    await asyncio.wait([work, gone], return_when=asyncio.FIRST_COMPLETED)
    reporting.cancel()
    if not work.done():  # the master is gone: stop; the closed connection ends the receiver
        os._exit(1)
    gone.cancel()
    line: dict[str, object] = {"sent": counts.sent_bytes, "files": counts.sent_files}
    try:
        done = work.result()
        line["done"] = {"exit_status": done.exit_status, "stdout": done.stdout,  # digests
                        "stderr": done.stderr[-4000:]}
    except CorralError as exc:
        line["error"] = exc.message
    except OSError as exc:  # a data file unreadable: as the master's own stream would say
        line["error"] = f"{type(exc).__name__}: {exc}"
    line["peak_kib"] = _peak_kib()
    _say(line)


def _peak_kib() -> int:
    """This process's peak resident memory: ``VmHWM``, its own address space's (``ru_maxrss``
    keeps the parent's size at the fork across ``exec`` on Linux: a sender started from a
    large process would report that)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS


if __name__ == "__main__":
    asyncio.run(_sender_main())
