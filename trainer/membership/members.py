"""One rank's side of live membership: its generation, its flags for the step's tally, and the
change at a step boundary or after a loss, agreed through the membership store.

A change happens only at a step boundary and every rank of the generation agrees on it without
an extra round trip: the step's tally (trainer/step/tally.py) carries each rank's ``leave``
flag (its host's ``RunLayout.leave_request`` file exists). When a tally shows one, rank 0
decides the ``NextGeneration`` (trainer/membership/plan.py) and writes it to the store under
``plan/<generation>/<step>``; every rank reads the same record and acts on it. After a loss (a
collective failed: a peer died or stopped answering) the survivors write ``alive/...`` with
the steps they completed; rank 0 waits for every member to answer or for its heartbeat to stop
(``MembershipStore.gone``), then writes ``plan/<generation>/loss``. Without
``CORRAL_MEMBERSHIP_PORT`` none of this exists: the run is today's.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainer.dist import RankInfo
from trainer.event_log import EventWriter
from trainer.events import MembershipEvent
from trainer.launch_contract import HOST_ENV
from trainer.membership.contract import MEMBERSHIP_PORT_ENV, LeaveCause
from trainer.membership.plan import Generation, NextGeneration, resplit
from trainer.membership.store import MembershipStore
from trainer.run_layout import RunLayout
from trainer.step.tally import StepTally

JOINER_FIRST_SHARE = 1
"""A joiner's share of its first step: the balancer grows it from its measured speed."""


@dataclass
class Pending:
    """A change made, whose event rank 0 writes after the new generation's first step."""

    plan: NextGeneration
    trigger: float
    """When it was asked for or the loss was seen (``time.monotonic``)."""
    state_bytes: int = 0


class Membership:
    """This rank's membership: the store, its generation, and what changes it."""

    def __init__(self, store: MembershipStore, generation: Generation, member: int,
                 leave_file: str) -> None:
        self.store, self.generation, self.member = store, generation, member
        self.leave_file = leave_file
        self.refused = False
        """This rank's host asked to leave and was refused (the master's host): not again."""
        self.pending: Pending | None = None

    @property
    def rank(self) -> int:
        return self.generation.members.index(self.member)

    @property
    def host(self) -> str:
        return self.generation.hosts[self.rank]

    # -- what the step's tally carries ---------------------------------------------------
    def leave_flag(self) -> float:
        """1.0 when this rank's host asked to leave (and was not refused already)."""
        return 1.0 if not self.refused and os.path.exists(self.leave_file) else 0.0

    # -- a step boundary -----------------------------------------------------------------
    def at_boundary(self, tallies: Sequence[StepTally], step: int, split: Sequence[int],
                    global_batch: int, events: EventWriter) -> NextGeneration | None:
        """The change the step's tallies ask for, as rank 0 decided it (None: no change)."""
        if not any(t.leave > 0 for t in tallies):
            return None
        asked = tuple(dict.fromkeys(self.generation.hosts[r] for r, t in enumerate(tallies)
                                    if t.leave > 0))
        key = f"plan/{self.generation.number}/{step}"
        master = self.generation.hosts[0]
        if master in asked:  # every rank sees it: the master's host's ranks stop asking
            if self.host == master:
                self.refused = True
            if self.rank == 0:
                _remove(self.leave_file)
                events.emit(MembershipEvent(
                    t=time.time(), rank=0, generation=self.generation.number, step=step,
                    change="refused", hosts=(master,), world_size=len(tallies),
                    members=self.generation.members,
                    reason=f"{master} is the master's host (rank 0 serves the run's store "
                           "and rendezvous): it cannot leave; stop the run instead"))
        if self.rank == 0:
            leaving = tuple(h for h in asked if h != master)
            plan = (self._without(leaving, step, split, global_batch, "asked", 0)
                    if leaving else None)
            self.store.set(key, plan.to_json() if plan else "null")
        text = self.store.get(key)
        return None if text == "null" else NextGeneration.from_json(text)

    def after_loss(self, completed: int, seen: BaseException, split: Sequence[int],
                   global_batch: int) -> NextGeneration:
        """After a failed collective: tell rank 0 this rank is alive with ``completed`` steps,
        and read the generation rank 0 forms from the members that answered."""
        gen = self.generation.number
        self.store.set(f"alive/{gen}/{self.member}", str(completed))
        key = f"plan/{gen}/loss"
        if self.rank == 0:
            gone = [m for m in self.generation.members
                    if self.store.gone(m, f"alive/{gen}/{m}")]
            hosts = tuple(dict.fromkeys(self.generation.hosts[self.generation.members.index(m)]
                                        for m in gone))
            steps = {m: int(self.store.get(f"alive/{gen}/{m}"))
                     for m in self.generation.members if m not in gone}
            cause: LeaveCause = ("unreachable" if "timed out" in str(seen).lower()
                                 else "ranks_died")
            plan = self._without(hosts, max(steps.values()), split, global_batch, cause, 1,
                                 dropped=set(gone), steps=steps)
            self.store.set(key, plan.to_json())
        return NextGeneration.from_json(self.store.get(key))

    def _without(self, hosts: Sequence[str], step: int, split: Sequence[int],
                 global_batch: int, cause: LeaveCause, redone: int,
                 dropped: set[int] | None = None, steps: dict[int, int] | None = None
                 ) -> NextGeneration:
        """Rank 0: the next generation without ``hosts``' ranks (and ``dropped`` members)."""
        gen = self.generation
        kept = tuple(r for r, (m, h) in enumerate(zip(gen.members, gen.hosts, strict=True))
                     if h not in hosts and m not in (dropped or set()))
        members = tuple(gen.members[r] for r in kept)
        behind = steps is not None and len({steps[m] for m in members}) > 1
        state_from = (next(i for i, m in enumerate(members) if steps[m] == step)
                      if behind and steps is not None else None)
        return NextGeneration(
            generation=Generation(gen.number + 1, members, tuple(gen.hosts[r] for r in kept)),
            step=step, split=resplit(split, kept, global_batch), kept=kept, change="left",
            hosts=tuple(hosts), cause=cause, redone_steps=redone, state_from=state_from)

    # -- forming the next generation ----------------------------------------------------
    def form(self, plan: NextGeneration, backend: str, device: torch.device) -> None:
        """Join ``plan``'s generation (this rank is one of its members)."""
        self.generation = plan.generation
        self.store.form(plan.generation.number, self.rank, len(plan.generation.members),
                        backend, device)

    def changed(self, plan: NextGeneration, seen: float, state_bytes: int) -> None:
        """The new generation is formed: its event waits for its first completed step."""
        self.pending = Pending(plan, seen, state_bytes)

    def leave(self) -> None:
        """This rank's host left: its request is done, its heartbeat stops."""
        _remove(self.leave_file)
        self.store.stop_heartbeat()

    def report(self, events: EventWriter) -> None:
        """Rank 0, after the new generation's first completed step: the membership event."""
        pending, self.pending = self.pending, None
        if pending is None or self.rank != 0:
            return
        plan = pending.plan
        events.emit(MembershipEvent(
            t=time.time(), rank=0, generation=plan.generation.number, step=plan.step,
            change=plan.change, hosts=plan.hosts, cause=plan.cause,
            redone_steps=plan.redone_steps, world_size=len(plan.generation.members),
            members=plan.generation.members, state_bytes=pending.state_bytes,
            seconds_to_step=round(time.monotonic() - pending.trigger, 3)))


def join_store(config_run_dir: str, info: RankInfo, backend: str,
               device: torch.device) -> Membership | None:
    """With ``CORRAL_MEMBERSHIP_PORT``: reach the store (rank 0 serves it), tell every rank
    this member's host, and join generation 0's group on it. Without: None (today's path:
    the caller joins torchrun's rendezvous)."""
    port = os.environ.get(MEMBERSHIP_PORT_ENV)
    if not port:
        return None
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    store = MembershipStore(addr, int(port), serve=info.rank == 0)
    host = os.environ.get(HOST_ENV) or os.uname().nodename
    store.set(f"host/{info.rank}", host)
    members = tuple(range(info.world_size))
    hosts = tuple(store.get(f"host/{m}") for m in members)
    store.start_heartbeat(info.rank)
    membership = Membership(store, Generation(0, members, hosts), info.rank,
                            RunLayout(config_run_dir).leave_request(host))
    store.form(0, info.rank, info.world_size, backend, device)
    return membership


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
