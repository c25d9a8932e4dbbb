"""One reusable connection per host, opened on first use.

Connects are gated by a semaphore (``[ssh] max_parallel_connects``) because sshd's MaxStartups
drops bursts of parallel handshakes. A ``local`` host gets a ``LocalTransport``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig, HostSection
from remote.hosts.ssh import SshTransport, connect
from remote.hosts.transport import LocalTransport, Transport

T = TypeVar("T")


class HostPool:
    """Connections to every host of a cluster, each opened once and reused."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self._hosts: dict[str, HostSection] = {h.name: h for h in config.hosts}
        self._transports: dict[str, Transport] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._gate: asyncio.Semaphore | None = None

    def host(self, host_name: str) -> HostSection:
        """The ``[[hosts]]`` entry named ``host_name``."""
        try:
            return self._hosts[host_name]
        except KeyError:
            raise CorralError(f"no host named {host_name!r} in {self.config.path}") from None

    async def get(self, host_name: str) -> Transport:
        """The (possibly new) transport to ``host_name``."""
        host = self.host(host_name)
        if host_name in self._transports:
            return self._transports[host_name]
        lock = self._locks.setdefault(host_name, asyncio.Lock())
        async with lock:
            if host_name not in self._transports:
                if host.is_local:
                    self._transports[host_name] = LocalTransport(host)
                else:
                    if self._gate is None:
                        self._gate = asyncio.Semaphore(self.config.ssh.max_parallel_connects)
                    async with self._gate:
                        conn = await connect(host, self.config.ssh)
                    self._transports[host_name] = SshTransport(host, conn)
        return self._transports[host_name]

    async def drop(self, host_name: str) -> None:
        """Forget (and close) ``host_name``'s connection, e.g. after it was lost."""
        transport = self._transports.pop(host_name, None)
        if transport is not None:
            await transport.close()

    async def gather(
        self,
        fn: Callable[[Transport], Awaitable[T]],
        hosts: Sequence[str] | None = None,
    ) -> dict[str, T | BaseException]:
        """``fn(transport)`` on every host (or ``hosts``) in parallel; per-host result or error."""
        names = list(hosts) if hosts is not None else [h.name for h in self.config.hosts]

        async def one(name: str) -> T:
            return await fn(await self.get(name))

        results = await asyncio.gather(*(one(n) for n in names), return_exceptions=True)
        return dict(zip(names, results, strict=True))

    async def settle(self) -> dict[str, int]:
        """Per host connected, once every command given up on there has ended
        (``Transport.settle``), how many of them it never confirmed ended."""
        names = list(self._transports)
        counts = await asyncio.gather(*(self._transports[n].settle() for n in names),
                                      return_exceptions=True)
        return {n: c if isinstance(c, int) else 1 for n, c in zip(names, counts, strict=True)}

    async def aclose(self) -> None:
        """Close every connection (background commands on the hosts keep running)."""
        transports, self._transports = list(self._transports.values()), {}
        await asyncio.gather(*(t.close() for t in transports), return_exceptions=True)
