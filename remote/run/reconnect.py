"""A host's event tail that survives a lost SSH connection.

Losing the SSH sessions (sshd restarted, a link down for a while) does not stop training on the
host. The tail is therefore re-opened with backoff, continuing from the local copy's saved
offsets (so nothing is lost or shown twice), and the host is declared lost only after
``[ssh] lost_after`` seconds without a working connection. Meanwhile the follower shows a
``HostStatus`` saying what is happening: ``unreachable`` with "reconnecting", then ``running``
with "reconnected after N s".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from profiles.user_errors import CorralError
from remote.events import HostStatus
from remote.hosts.pool import HostPool
from remote.records.collected import CollectedCopy
from remote.run.stream import TailItem, tail_host

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Waits between reconnection attempts (the last one repeats)."""


async def resilient_tail(pool: HostPool, host: str, run_dir: str, copy: CollectedCopy,
                         lost_after: float) -> AsyncIterator[TailItem | HostStatus]:
    """``tail_host`` of ``host``, re-opened after a lost connection until ``lost_after``
    seconds have passed without one; then the last error is raised (the host is lost)."""
    lost_since: float | None = None
    attempt = 0
    while True:
        try:
            transport = await pool.get(host)
            async for item in tail_host(transport, run_dir, copy):
                if lost_since is not None:
                    yield HostStatus(t=time.time(), host=host, state="running",
                                     detail=f"reconnected after {time.monotonic() - lost_since:.0f}"
                                     " s; the event stream goes on where it stopped")
                    lost_since, attempt = None, 0
                yield item
            return
        except CorralError as exc:
            await pool.drop(host)
            now = time.monotonic()
            if lost_since is None:
                lost_since = now
                yield HostStatus(t=time.time(), host=host, state="unreachable",
                                 detail=f"{exc}; reconnecting (the host counts as lost after "
                                 f"{lost_after:g} s, [ssh] lost_after)")
            if now - lost_since >= lost_after:
                raise
            wait = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            attempt += 1
            await asyncio.sleep(min(wait, max(lost_after - (now - lost_since), 0.0)))
