"""Abort a generation's process group while its collectives are in flight, from any thread.

torch's gloo backend has no abort that interrupts an operation in flight (``ProcessGroup.abort``
and ``_abort_process_group`` return at once in torch 2.13, and a ``Work.wait`` on an all-reduce
whose peer stopped answering still waits for the group's timeout), and a rank waits inside C++
(DDP's reducer, ``Work.wait``) where no Python check can run. What does interrupt it is what a
killed peer does: its connections closing. So a gloo group is aborted by shutting down this
process's gloo connections (``shutdown(2)`` on a duplicate of each descriptor; gloo keeps and
later closes its own): every operation in flight or started later on the old generation's groups
fails at once with gloo's "connection closed", on this rank and on each peer it was talking to,
as after a SIGKILL. The membership store's connections (client and, on rank 0, server) are the
ones kept: they carry the next generation. NCCL has an abort of its own
(``_abort_process_group``), which is used there.
"""

from __future__ import annotations

import contextlib
import os
import socket

import torch.distributed as dist

ESTABLISHED = "01"
"""The state column of /proc/net/tcp for a connected socket."""


def open_sockets() -> frozenset[str]:
    """The inodes of this process's sockets now (those open before any group was made are
    never the groups')."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                found.add(target[8:-1])
    return frozenset(found)


def group_sockets(store_port: int, before: frozenset[str]) -> list[int]:
    """This process's connected TCP sockets, as descriptor numbers, except those to or from
    ``store_port`` (the membership store's) and those open ``before``."""
    keep_out, connected = f"{store_port:04X}", set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                cols = row.split()
                local_port, remote_port = cols[1].rsplit(":", 1)[1], cols[2].rsplit(":", 1)[1]
                if cols[3] == ESTABLISHED and keep_out not in (local_port, remote_port):
                    connected.add(cols[9])  # the socket's inode
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            inode = target[8:-1]
            if target.startswith("socket:[") and inode in connected and inode not in before:
                found.append(int(fd))
    return found


def abort_groups(backend: str, store_port: int, before: frozenset[str]) -> int:
    """Make every operation of the current process groups fail now (see the module's
    docstring): gloo's connections are those opened since ``before`` (``open_sockets``),
    except the store's. The number shut down (NCCL: 0, its own abort)."""
    if backend == "nccl":
        with contextlib.suppress(RuntimeError, ValueError):
            dist.distributed_c10d._abort_process_group()
        return 0
    count = 0
    for fd in group_sockets(store_port, before):
        with contextlib.suppress(OSError):
            dup = socket.socket(fileno=os.dup(fd))
            with contextlib.suppress(OSError):
                dup.shutdown(socket.SHUT_RDWR)
                count += 1
            dup.close()
    return count
