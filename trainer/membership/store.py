"""The run's membership store: one torch ``TCPStore`` that outlives process groups.

Served by the launch's rank 0 on ``MASTER_ADDR:$CORRAL_MEMBERSHIP_PORT`` (the master's host
cannot leave, so the store lives as long as the run); every rank, and every joiner launched
later by its own torchrun, is a client. Generation n's process group is made on
``PrefixStore(f"gen{n}", store)`` in the same processes (docs/architecture.md says why this and
not torchrun's agent store or torchft's reconfigurable groups). Besides the groups the store
holds: each member's host, its heartbeat (a counter each rank's thread bumps), the survivors'
reports after a loss and rank 0's ``NextGeneration`` records (trainer/membership/members.py).
"""

from __future__ import annotations

import datetime
import threading
import time

import torch
import torch.distributed as dist

STORE_TIMEOUT = datetime.timedelta(minutes=30)
"""How long a blocking read of the store waits (a rank waiting for rank 0's decision)."""
GROUP_TIMEOUT = datetime.timedelta(minutes=30)
"""Each generation's process group timeout (a slow step is not a loss: the heartbeat is)."""
HEARTBEAT_S = 0.25
"""How often each rank's thread bumps its heartbeat counter."""
STALE_S = 2.0
"""A member whose heartbeat has not moved for this long is gone (well inside LOSS_DETECT_S)."""
CONNECT_TIMEOUT = datetime.timedelta(seconds=120)
"""How long a rank (or joiner) tries to reach the store at its start."""


class MembershipStore:
    """The store and the process group made from it for each generation."""

    def __init__(self, addr: str, port: int, *, serve: bool) -> None:
        self.addr, self.port = addr, port
        self.store = dist.TCPStore(addr, port, None, serve, timeout=CONNECT_TIMEOUT,
                                   wait_for_workers=False)
        self.store.set_timeout(STORE_TIMEOUT)
        self._beating = threading.Event()

    def form(self, generation: int, rank: int, world: int, backend: str,
             device: torch.device) -> None:
        """Leave the current process group (if any) and join generation ``generation``'s."""
        if dist.is_initialized():
            dist.destroy_process_group()
        dist.init_process_group(backend=backend, store=dist.PrefixStore(f"gen{generation}",
                                                                        self.store),
                                rank=rank, world_size=world, timeout=GROUP_TIMEOUT,
                                device_id=device if backend == "nccl" else None)

    def set(self, key: str, value: str) -> None:
        self.store.set(key, value)

    def get(self, key: str) -> str:
        """``key``'s value, waiting for it (up to ``STORE_TIMEOUT``)."""
        return bytes(self.store.get(key)).decode()

    def has(self, key: str) -> bool:
        return bool(self.store.check([key]))

    def count(self, key: str, by: int = 0) -> int:
        """Add ``by`` to the counter ``key`` and return its value (``by=0``: read it)."""
        return int(self.store.add(key, by))

    def start_heartbeat(self, member: int) -> None:
        """Bump ``beat/<member>`` every ``HEARTBEAT_S`` from a daemon thread with its own
        connection (a rank blocked in a collective still beats; a killed one stops)."""
        client = dist.TCPStore(self.addr, self.port, None, False, timeout=CONNECT_TIMEOUT,
                               wait_for_workers=False)

        def beat() -> None:
            while not self._beating.is_set():
                try:
                    client.add(f"beat/{member}", 1)
                except RuntimeError:  # the store is gone: the run is over
                    return
                self._beating.wait(HEARTBEAT_S)

        threading.Thread(target=beat, name="corral-heartbeat", daemon=True).start()

    def stop_heartbeat(self) -> None:
        self._beating.set()

    def gone(self, member: int, answered: str) -> bool:
        """Whether ``member`` is gone: waits until it has written ``answered`` (then False) or
        its heartbeat has not moved for ``STALE_S`` (then True)."""
        last, since = self.count(f"beat/{member}"), time.monotonic()
        while not self.has(answered):
            time.sleep(HEARTBEAT_S / 2)
            now = self.count(f"beat/{member}")
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= STALE_S:
                return True
        return False
