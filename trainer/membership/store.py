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
import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol, TypeVar

import torch
import torch.distributed as dist

from trainer.membership.abort import abort_groups, open_sockets
from trainer.membership.contract import survives_loss
from trainer.membership.liveness import Liveness, own_address
from trainer.membership.reach import Dropped, Reach, end_dropped, watch_reach
from trainer.membership.watch import HEARTBEAT_S, Watch

STORE_TIMEOUT = datetime.timedelta(minutes=30)
"""How long a blocking read of the store waits (a rank waiting for rank 0's decision)."""
GROUP_TIMEOUT = datetime.timedelta(minutes=30)
"""Each generation's process group timeout (a slow step is not a loss: the heartbeat is, and
a lost member's generation is aborted: trainer/membership/watch.py)."""
CONNECT_GROUP_TIMEOUT = datetime.timedelta(seconds=10)
"""How long the store answers a group's rendezvous once every member arrived, and a gloo group's
timeout while it is made (each member publishes its address and connects within milliseconds
then; a member lost in between is not waited for longer)."""
CONNECT_TIMEOUT = datetime.timedelta(seconds=120)
"""How long a launched rank tries to reach the store at its start (rank 0 may start later)."""
JOIN_CONNECT_TIMEOUT = datetime.timedelta(seconds=20)
"""How long a joiner tries: the run it joins serves its store already, so a store that does not
answer means the run has ended (rank 0 serves it, and exits with it)."""

T = TypeVar("T")

Gone = Literal["closed", "silent"]
"""How a member was found gone: its store connection closed (its process ended:
trainer/membership/liveness.py), or its heartbeat was still for ``STALE_S`` (cut off, frozen,
its machine off; or a process ended where rank 0 never saw its connection)."""


class MembershipStore:
    """The store and the process group made from it for each generation."""

    def __init__(self, addr: str, port: int, *, serve: bool,
                 connect: datetime.timedelta = CONNECT_TIMEOUT) -> None:
        self.addr, self.port = addr, port
        self.store = dist.TCPStore(addr, port, None, serve, timeout=connect,
                                   wait_for_workers=False)
        self.store.set_timeout(STORE_TIMEOUT)
        self.liveness = Liveness(port) if serve else None
        """Rank 0's (it serves the store): whose store connection closed."""
        self._before = open_sockets()
        """Sockets open before any group: never aborted (trainer/membership/abort.py)."""
        self._beating = threading.Event()
        self.reach = Reach()
        """When the store last answered this rank's heartbeat (``watch_reach`` ends a rank
        cut off from it)."""
        self.backend = "gloo"
        self.generation = 0
        """The generation this rank is in or forming (``form``): its heartbeat reads whether
        the run went on without it (``left_out``)."""
        self.watch: Watch | None = None
        """This rank's watch on the others (from ``start_heartbeat``)."""
        self.joining = False
        """A joiner's: its watch is armed from its first forming (a launched rank's from its
        first step: ``Watch.arm``)."""

    def form(self, generation: int, members: Sequence[int], me: int, backend: str,
             device: torch.device) -> None:
        """Leave the current process group (if any) and join generation ``generation``'s, of
        ``members`` (this rank is member ``me``). Raises ``MemberLost`` when one of them is
        lost before all arrived (the forming is retried without it)."""
        self.backend, self.generation = backend, generation
        if self.watch is None:  # the heavy start (imports, the task's data) is behind it
            self.start_heartbeat(me, armed=self.joining)
        assert self.watch is not None
        self.watch.follow(members)  # before the new group's connections exist
        if dist.is_initialized():
            dist.destroy_process_group()
        self._arrive(f"ready/{generation}", members, me)
        self._connecting(backend, lambda timeout: dist.init_process_group(
            backend=backend, store=dist.PrefixStore(f"gen{generation}", self.store),
            rank=members.index(me), world_size=len(members), timeout=timeout,
            device_id=device if backend == "nccl" else None))
        if backend == "gloo":
            dist.distributed_c10d._get_default_group().set_timeout(GROUP_TIMEOUT)

    def new_group(self, at: str, members: Sequence[int], me: int, ranks: list[int],
                  backend: str) -> object:
        """``dist.new_group(ranks)`` (an active set's group, trainer/step/exchange.py: every
        rank of the generation calls it; ``members``, the ranks' member ids, rendezvous) bounded
        as the generation's forming is: its members first wait for each other at ``at`` (a
        lost one raises ``MemberLost``), then connect with the short timeouts. Without this a
        member lost meanwhile kept the others in the store's wait for its address
        (``STORE_TIMEOUT``), where no abort reaches."""
        if me in members:  # the others make nothing (torch returns at once there)
            self._arrive(at, members, me)
        group = self._connecting(backend, lambda timeout: dist.new_group(
            ranks, backend=backend, timeout=timeout))
        if backend == "gloo" and isinstance(group, dist.ProcessGroup):
            group.set_timeout(GROUP_TIMEOUT)
        return group

    def _connecting(self, backend: str, make: Callable[[datetime.timedelta], T]) -> T:
        """``make(timeout)``: a group made with the short timeouts of a forming, the store's
        and (gloo) the group's, then the caller gives it the long one. gloo made with the long
        timeout would wait 5 times it (gloo's tcp Pair::waitUntil) for a member that published
        its address and froze before it connected, with no connection yet for the watch to
        abort: with the short one, about 50 s at most for that member."""
        self.store.set_timeout(CONNECT_GROUP_TIMEOUT)
        try:
            return make(CONNECT_GROUP_TIMEOUT if backend == "gloo" else GROUP_TIMEOUT)
        finally:
            self.store.set_timeout(STORE_TIMEOUT)

    def _arrive(self, at: str, members: Sequence[int], me: int) -> None:
        """Wait until every one of ``members`` is here (``at/<member>``) to form a group, or
        one is lost (its store connection closed or its heartbeat stopped; one that never
        started is given ``CONNECT_TIMEOUT``): the group's own rendezvous would wait for it
        far longer."""
        self.set(f"{at}/{me}", "1")
        waiting, since = [m for m in members if m != me], time.monotonic()
        while waiting:
            waiting = [m for m in waiting if not self.has(f"{at}/{m}")]
            watch, late = self.watch, time.monotonic() - since > CONNECT_TIMEOUT.total_seconds()
            lost = [m for m in waiting if watch is not None and watch.armed and (
                watch.lost(m) or (late and watch.never_beat(m)))]
            if lost:
                raise MemberLost(f"member(s) {lost} lost while a group formed ({at})")
            if waiting:
                time.sleep(HEARTBEAT_S / 5)

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

    def start_heartbeat(self, member: int, *, armed: bool) -> None:
        """Bump ``beat/<member>`` every ``HEARTBEAT_S`` from a daemon thread with its own
        connection (a rank blocked in a collective still beats; a killed or cut off one stops),
        and read the watched members' beats (``Watch``: a lost one aborts the generation). Both
        from this rank's first step (``Watch.arm``): before it, a start that holds the
        interpreter for seconds (imports, building the task and the model; seen on a machine
        loaded many times over) would look like a loss."""
        before = open_sockets()
        client = dist.TCPStore(self.addr, self.port, None, False, timeout=CONNECT_TIMEOUT,
                               wait_for_workers=False)
        address, liveness = own_address(before, self.port), self.liveness
        if address is not None:  # where rank 0 finds this connection (liveness.py)
            client.set(f"conn/{member}", address)
        watch = self.watch = Watch(
            member, lambda: abort_groups(self.backend, self.port, self._before), armed=armed,
            closed=liveness.closed if liveness is not None else lambda m: False)

        reach = self.reach  # each answer heard: a rank cut off from the run ends (reach.py)
        reach.heard()
        # A rank whose link came back after the run went on without it ends too (reach.py);
        # the master's (it serves the store) is never left out.
        dropped = Dropped() if liveness is None and survives_loss() else None
        plans: dict[int, bool] = {}

        def beat() -> None:
            while not self._beating.is_set():
                try:
                    client.add(f"beat/{member}", 1 if watch.armed else 0)
                    if liveness is not None:
                        _see_connections(client, liveness, watch.watched())
                    watch.observe({m: int(client.add(f"beat/{m}", 0))
                                   for m in watch.watched()})
                    gen = self.generation
                    if dropped is not None and dropped.seen(left_out(client, gen, member, plans)):
                        end_dropped(gen)
                except RuntimeError:  # the store is gone: the run is over
                    return
                reach.heard()
                self._beating.wait(HEARTBEAT_S)

        threading.Thread(target=beat, name="corral-heartbeat", daemon=True).start()
        if survives_loss():  # under "stop" a rank cut off waits as without membership
            watch_reach(reach, f"{self.addr}:{self.port}")

    def stop_heartbeat(self) -> None:
        self._beating.set()
        self.reach.stop()

    def gone(self, member: int, answered: str) -> Gone | None:
        """How ``member`` is gone, or None: waits until it has written ``answered`` (None),
        its store connection is closed (``closed``: rank 0 sees it at once) or the watch finds
        its heartbeat still for ``STALE_S`` (``silent``; one that never beat, in its start, is
        given ``CONNECT_TIMEOUT``)."""
        assert self.watch is not None  # every member's heartbeat starts as it forms
        since = time.monotonic()
        while not self.has(answered):
            if self.watch.closed(member):
                return "closed"
            late = time.monotonic() - since > CONNECT_TIMEOUT.total_seconds()
            if self.watch.stale(member) or (late and self.watch.never_beat(member)):
                return "silent"
            time.sleep(HEARTBEAT_S / 5)
        return None

    def end_generation(self) -> None:
        """Abort the current generation's groups (a loss was seen here): every peer still in
        one of its collectives fails at once, not after its own watch's ``STALE_S``."""
        abort_groups(self.backend, self.port, self._before)


class PlanReader(Protocol):
    """What ``left_out`` reads of the store (a ``TCPStore`` client)."""

    def check(self, keys: list[str], /) -> bool: ...
    def get(self, key: str, /) -> bytes: ...


def left_out(client: PlanReader, generation: int, member: int, plans: dict[int, bool]) -> bool:
    """Whether rank 0's plan after a loss of ``generation`` (``plan/<generation>/loss``) leaves
    ``member`` out: the run went on without it. ``plans``: what was read already, by
    generation (a plan is written once)."""
    if generation not in plans:
        key = f"plan/{generation}/loss"
        if not client.check([key]):
            return False
        members = json.loads(bytes(client.get(key)).decode())["generation"]["members"]
        plans[generation] = member not in members
    return plans[generation]


def _see_connections(client: dist.TCPStore, liveness: Liveness, members: Sequence[int]) -> None:
    """Rank 0's heartbeat: find its side of each watched member's store connection not seen
    yet (the member publishes its address as its heartbeat starts)."""
    for m in members:
        if m not in liveness.sides and client.check([f"conn/{m}"]):
            liveness.see(m, bytes(client.get(f"conn/{m}")).decode())


class MemberLost(RuntimeError):
    """A member of the generation being formed was lost before it arrived."""
