"""Whether a member's process has ended, known the moment its store connection closes.

Each rank's heartbeat thread keeps a connection of its own to the run's membership store, which
rank 0's process serves. When a member's process ends (killed, crashed) while its machine runs
on, its kernel closes that connection, and rank 0's side of it leaves the ESTABLISHED state at
once: proof that the member is gone, with no wait for its heartbeat to go still for
``STALE_S`` (trainer/membership/watch.py). A member publishes the address of its side of the
connection (``conn/<member>`` in the store, ``own_address``); rank 0 finds its own side of it
while it is open (``Liveness.see``) and from then on knows when it closes (``closed``).

A host that is cut off or powered off closes nothing: its connection stays open on rank 0's
side and the watch's silence decides, as it does where rank 0 never saw the connection (an
address translated on the way). Linux's /proc, as trainer/membership/abort.py reads it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from trainer.membership.abort import ESTABLISHED, open_sockets


@dataclass(frozen=True)
class Connection:
    """One row of /proc/net/tcp or tcp6: a TCP socket of this machine (its network namespace)."""

    local: str
    """This side's address, ``ip:port`` (an IPv4-mapped IPv6 address as IPv4)."""
    remote: str
    established: bool
    inode: str
    """The socket's inode: the same while the socket lives, whoever reads the table."""


def _address(column: str) -> str:
    """``ip:port`` from the table's hex column: the address is printed as 32-bit words in the
    machine's byte order, the port in network order."""
    host, port = column.split(":")
    raw = b"".join(int(host[i:i + 8], 16).to_bytes(4, sys.byteorder)
                   for i in range(0, len(host), 8))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f"{ip}:{int(port, 16)}"


def connections() -> Iterator[Connection]:
    """Every TCP socket of this machine's network namespace now."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                cols = row.split()
                yield Connection(_address(cols[1]), _address(cols[2]), cols[3] == ESTABLISHED,
                                 cols[9])


def own_address(before: frozenset[str], store_port: int) -> str | None:
    """The address of this process's side of its connection to the store made since
    ``before`` (``open_sockets``); None when it is not found."""
    new = open_sockets() - before
    return next((c.local for c in connections() if c.inode in new and c.established
                 and c.remote.endswith(f":{store_port}")), None)


class Liveness:
    """Rank 0's view of the members' store connections, on its side (it serves the store)."""

    def __init__(self, store_port: int) -> None:
        self.store_port = store_port
        self.sides: dict[int, str] = {}
        """Member -> the inode of rank 0's side of its connection, once seen open."""

    def see(self, member: int, address: str) -> bool:
        """Find rank 0's side of ``member``'s connection from ``address`` while it is open;
        whether it is known now."""
        if member not in self.sides:
            side = next((c.inode for c in connections() if c.established and c.remote == address
                         and c.local.endswith(f":{self.store_port}")), None)
            if side is not None:
                self.sides[member] = side
        return member in self.sides

    def closed(self, member: int) -> bool:
        """Whether ``member``'s connection, seen open before, is closed now: its process ended.
        False when it was never seen (nothing is known)."""
        side = self.sides.get(member)
        return side is not None and not any(c.inode == side and c.established
                                            for c in connections())
