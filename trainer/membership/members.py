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
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import torch

from profiles.user_errors import CorralError
from trainer.dist import RankInfo, init_process_group
from trainer.event_log import EventWriter, events_path
from trainer.events import LeaveCause, MembershipEvent
from trainer.membership.contract import (
    survives_loss,
)
from trainer.membership.join_cost import admitted_phases
from trainer.membership.plan import Generation, NextGeneration, resplit, written_split
from trainer.membership.store import Gone, MemberLost, MembershipStore
from trainer.membership.watch import STALE_S

LOSS_WORDS = ("connection", "closed", "reset by peer", "broken pipe", "timed out", "timeout")
"""What gloo's and the store's errors say when a peer is gone or was cut off."""
GONE_WORDS: dict[Gone, str] = {
    "closed": "its processes ended (their store connections closed)",
    "silent": f"no heartbeat for {STALE_S:g} s"}
"""A lost host's event's ``reason``, by how it was found gone."""
JOINER_FIRST_SHARE = 1
"""A joiner's share of its first step: the balancer grows it from its measured speed."""
SAID = "said/{member}"
"""Where a rank ending on an error of its own leaves its words for rank 0 (``Membership.say``)."""


class BoundaryFlags(Protocol):
    """What a boundary reads of each rank's tally: an exact step's ``StepTally``, a
    low-communication round's ``RoundTally`` (trainer/lowcomm/steps.py)."""

    @property
    def leave(self) -> float: ...
    @property
    def joiners(self) -> float: ...


@dataclass(frozen=True)
class Alive:
    """A survivor's answer after a loss (``alive/<generation>/<member>`` in the store)."""

    steps: int
    """Steps it completed."""
    in_step: bool
    """The failure interrupted the step after ``steps`` (it is redone)."""
    failed_at: float
    """When its collective failed (``time.time()``)."""
    tripped_at: float | None
    """When its watch found a member's heartbeat still and aborted the generation, if it did."""


def loss_cause(answers: Iterable[Alive], gone: Iterable[Gone] = ()) -> LeaveCause:
    """Why the lost host left: its ranks died when a lost member's store connection closed
    (its process ended). Else from the survivors' answers: its ranks died when a collective
    failed (a connection closed) well before any heartbeat was found still; it was unreachable
    (killed with its machine, or its traffic dropped) when the first failures came from the
    watches' aborts. Hosts' clocks may differ a little: half a second of slack."""
    if "closed" in gone:
        return "ranks_died"
    answers = list(answers)
    trips = [a.tripped_at for a in answers if a.tripped_at is not None]
    if not trips:
        return "ranks_died"
    return ("ranks_died" if any(a.failed_at < min(trips) - 0.5 for a in answers)
            else "unreachable")


@dataclass
class Pending:
    """A change made, whose event rank 0 writes after the new generation's first step."""

    plan: NextGeneration
    trigger: float  # when it was asked for or the loss was seen (time.monotonic)
    state_bytes: int = 0


class Membership:
    """This rank's membership: the store, its generation, and what changes it."""

    def __init__(self, store: MembershipStore, generation: Generation, member: int,
                 leave_file: str) -> None:
        self.store, self.generation, self.member, self.leave_file = (store, generation, member,
                                                                     leave_file)
        self.refused = False  # this rank's host asked to leave, refused (the master's): not again
        self.pending: Pending | None = None
        self.joining: NextGeneration | None = None
        """A joiner, until it has the state: the generation that admitted it."""
        self.identity: dict[str, object] = {}
        """This rank's torch and run identity (a joiner's must match rank 0's)."""
        self.tickets_seen = 0
        """Rank 0: the joiners' tickets handled so far."""
        self.next_member = len(generation.members)
        """Rank 0: the member id the next joiner gets (ids are never reused)."""
        self.groups_made = 0
        """Active sets' groups made in this generation (every rank makes the same ones)."""
        self.written: tuple[tuple[str, int], ...] | None = None
        """Rank 0, static split: the launch's (host, share) by rank (``written_split``)."""

    @property
    def rank(self) -> int:
        return self.generation.members.index(self.member)

    @property
    def host(self) -> str:
        return self.generation.hosts[self.rank]

    # -- what the step's tally carries ---------------------------------------------------
    def flags(self) -> tuple[float, float]:
        """What this rank's tally carries: 1.0 when its host asked to leave (and was not
        refused already); on rank 0, the joiners waiting (one read of the store)."""
        leave = 1.0 if not self.refused and os.path.exists(self.leave_file) else 0.0
        waiting = self.store.count("joiners/next") - self.tickets_seen if self.rank == 0 else 0
        return leave, float(waiting)

    # -- a step boundary -----------------------------------------------------------------
    def at_boundary(self, tallies: Sequence[BoundaryFlags], step: int, split: Sequence[int],
                    global_batch: int, events: EventWriter) -> NextGeneration | None:
        """The change the step's tallies ask for, as rank 0 decided it (None: no change)."""
        if not any(t.leave > 0 for t in tallies) and tallies[0].joiners == 0:
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
            plan = (self._without(leaving, step, split, global_batch, "asked", 0) if leaving
                    else self._admit(key, step, split, global_batch, events))
            self.store.set(key, plan.to_json() if plan else "null")
        text = self.store.get(key)
        return None if text == "null" else NextGeneration.from_json(text)

    def after_loss(self, completed: int, in_step: bool, split: Sequence[int],
                   global_batch: int) -> NextGeneration:
        """After a failed collective: tell rank 0 this rank is alive with ``completed`` steps
        (``in_step``: the failure interrupted the step after them), and read the generation
        rank 0 forms from the members that answered."""
        gen, watch = self.generation.number, self.store.watch
        self.store.set(f"alive/{gen}/{self.member}", json.dumps(asdict(Alive(
            steps=completed, in_step=in_step, failed_at=time.time(),
            tripped_at=watch.tripped_at if watch is not None else None))))
        key = f"plan/{gen}/loss"
        if self.rank == 0:
            self.store.set(key, self._after_loss_plan(split, global_batch).to_json())
        return NextGeneration.from_json(self.store.get(key))

    def _after_loss_plan(self, split: Sequence[int], global_batch: int) -> NextGeneration:
        """Rank 0: the generation of the members that answered (a member whose heartbeat
        stopped is gone, and its host with it)."""
        gen = self.generation
        found = {m: self.store.gone(m, f"alive/{gen.number}/{m}") for m in gen.members}
        gone = {m: how for m, how in found.items() if how is not None}
        alive = {m: Alive(**json.loads(self.store.get(f"alive/{gen.number}/{m}")))
                 for m in gen.members if m not in gone}
        hosts = tuple(dict.fromkeys(gen.hosts[gen.members.index(m)] for m in gone))
        step = max(a.steps for a in alive.values())
        redone = int(any(a.in_step for a in alive.values() if a.steps == step))
        plan = self._without(hosts, step, split, global_batch,
                             loss_cause(alive.values(), gone.values()), redone,
                             dropped=set(gone), steps={m: a.steps for m, a in alive.items()})
        said = [self.store.get(SAID.format(member=m)) for m in sorted(gone)
                if self.store.has(SAID.format(member=m))]
        return replace(plan, reason=GONE_WORDS["closed" if "closed" in gone.values()
                                               else "silent"],
                       said="; ".join(dict.fromkeys(said)) or None)

    def _admit(self, key: str, step: int, split: Sequence[int], global_batch: int,
               events: EventWriter) -> NextGeneration | None:
        """Rank 0: the next generation with every waiting joiner whose torch and run match
        (the others refused, the run untouched); None when none is let in."""
        gen, admitted = self.generation, []
        first, self.tickets_seen = self.tickets_seen + 1, self.store.count("joiners/next")
        for ticket in range(first, self.tickets_seen + 1):
            joiner = json.loads(self.store.get(f"joiner/{ticket}"))
            reason = _mismatch(self.identity, joiner)
            if reason is None:
                admitted.append((ticket, joiner["host"], self.next_member, joiner.get("phases")))
                self.next_member += 1
                continue
            self.store.set(f"admit/{ticket}", json.dumps({"refused": reason}))
            events.emit(MembershipEvent(
                t=time.time(), rank=0, generation=gen.number, step=step, change="refused",
                hosts=(joiner["host"],), reason=reason, world_size=len(gen.members),
                members=gen.members))
        if not admitted:
            return None
        kept = (*range(len(gen.members)), *(None for _ in admitted))
        hosts = gen.hosts + tuple(h for _, h, *_ in admitted)
        shares = written_split(self.written, hosts, global_batch,  # static: a host back too
                               resplit(split, kept, global_batch, JOINER_FIRST_SHARE))
        plan = NextGeneration(
            generation=Generation(gen.number + 1, gen.members + tuple(a[2] for a in admitted),
                                  hosts),
            step=step, split=shares, kept=kept, phases=admitted[0][3] or {},
            change="joined", hosts=tuple(h for _, h, *_ in admitted), state_from=0)
        self.store.set(key, plan.to_json())  # before the joiners read where it is
        for ticket, _, member, _ in admitted:
            self.store.set(f"admit/{ticket}", json.dumps({"member": member, "plan": key}))
        return plan

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
    def form(self, backend: str, device: torch.device) -> None:
        """Join the group of this rank's generation (set from the plan before: a forming that
        fails is retried from it, ``after_loss``)."""
        self.groups_made = 0
        self.store.form(self.generation.number, self.generation.members, self.member,
                        backend, device)

    def make_group(self, ranks: list[int], backend: str) -> object:
        """An active set's group of ``ranks`` (``ActiveSet``'s ``make_group``), bounded when
        one of them is lost while it forms (``MembershipStore.new_group``)."""
        self.groups_made += 1
        at = f"ready/{self.generation.number}/group{self.groups_made}"
        return self.store.new_group(at, [self.generation.members[r] for r in ranks],
                                    self.member, ranks, backend)

    def changed(self, plan: NextGeneration, seen: float, state_bytes: int) -> None:
        """The new generation is formed: its event waits for its first completed step."""
        self.pending, self.joining = Pending(plan, seen, state_bytes), None

    def arm(self) -> None:
        """From this rank's first step on, a member that goes silent is lost (``Watch``) where
        the run survives a loss; under ``on_host_loss = "stop"`` gloo and the follower judge."""
        if self.store.watch is not None and survives_loss():
            self.store.watch.arm()

    def say(self, words: str) -> None:
        """This rank ends on an error of its own (a full disk): ``words`` go to the store, where
        rank 0 puts them in the event of its host's loss (``MembershipEvent.said``), since
        nothing this rank writes on its host (its events, its launcher's log) may reach the
        user. A store that is gone takes nothing: the loss is then said without them. Under
        ``on_host_loss = "stop"`` nobody goes on to say it (the run fails and the follower
        names the failure), and nothing is sent."""
        key = SAID.format(member=self.member)
        if not survives_loss():
            return
        with contextlib.suppress(RuntimeError, OSError):
            self.store.set(key, words)
            self.store.has(key)  # a round trip: the words are in before this rank ends

    def leave(self) -> None:
        """This rank's host left: its request is done, its heartbeat stops."""
        _remove(self.leave_file)
        self.store.stop_heartbeat()

    def is_loss(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a lost member's doing (a collective failed on a closed or reset
        connection or a timeout, the watch aborted the generation, a member lost while it
        formed) that the run survives (not ``on_host_loss = "stop"``); else this rank fails."""
        watch, text = self.store.watch, str(exc).lower()
        tripped = watch is not None and watch.tripped_at is not None
        return survives_loss() and (isinstance(exc, MemberLost) or tripped
                                    or any(word in text for word in LOSS_WORDS))

    def unfinished(self, plan: NextGeneration, events: EventWriter) -> None:
        """Rank 0: ``plan``'s generation did not form (a member was lost meanwhile): its
        change stands (a leaver is out, a joiner in, if alive, for the next one)."""
        if self.rank == 0:
            events.emit(MembershipEvent(
                t=time.time(), rank=0, generation=plan.generation.number, step=plan.step,
                change=plan.change, hosts=plan.hosts, cause=plan.cause,
                redone_steps=plan.redone_steps, world_size=len(plan.generation.members),
                members=plan.generation.members, said=plan.said,
                reason="its generation did not form: a member was lost meanwhile"))

    def report(self, events: EventWriter) -> None:
        """Rank 0, after the new generation's first completed step: the membership event."""
        pending, self.pending = self.pending, None
        if pending is None or self.rank != 0:
            return
        plan, took = pending.plan, round(time.monotonic() - pending.trigger, 3)
        events.emit(MembershipEvent(
            t=time.time(), rank=0, generation=plan.generation.number, step=plan.step,
            change=plan.change, hosts=plan.hosts, cause=plan.cause, reason=plan.reason,
            redone_steps=plan.redone_steps, world_size=len(plan.generation.members),
            members=plan.generation.members, state_bytes=pending.state_bytes, said=plan.said,
            seconds_to_step=took, phases=admitted_phases(plan.phases, took)
            if plan.change == "joined" else {}))


class JoinRefused(CorralError):
    """Rank 0 refused this joiner: its torch or its run does not match the run's."""

    title = "join refused"


def rank_events(run_dir: str, membership: Membership | None, rank: int) -> EventWriter:
    """This rank's event writer; with live membership its file and every event's ``rank``
    are the member id, stable across generations."""
    writer = EventWriter(events_path(run_dir, membership.member if membership else rank))
    writer.members = membership.generation.members if membership else None
    return writer


def join_group(membership: Membership | None, backend: str, device: torch.device,
               info: RankInfo) -> None:
    """Join the run's process group: torchrun's rendezvous, or with live membership this
    rank's first generation's group on the run's store."""
    if membership is None:
        init_process_group(backend, device, info)
    else:
        membership.form(backend, device)


def _mismatch(mine: dict[str, object], joiner: dict[str, object]) -> str | None:
    """Why a joiner cannot take part (a torch or a run that differs from rank 0's), or None."""
    if joiner.get("torch") != mine.get("torch"):
        return (f"{joiner['host']} has torch {joiner.get('torch')}, the run {mine.get('torch')}:"
                " install the run's torch there")
    if joiner.get("run") != mine.get("run"):
        return (f"{joiner['host']} was started for another run ({joiner.get('run')}, the run: "
                f"{mine.get('run')}): join with the run's own settings")
    return None


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
