"""How the DDP helper's rank enters the run's live membership (``CORRAL_MEMBERSHIP_PORT``):
launched with the run, its generation 0 is torchrun's group; a joiner (``corral join``) is let
in at its first step, once the script built its model and optimizer, and takes its place and
the run's state there (trainer/integrations/ddp_live.py). Without the port: no membership."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import nn

from trainer.integrations.contract import ScriptSettings
from trainer.integrations.ddp_live import LiveShares
from trainer.integrations.run import ScriptRun
from trainer.integrations.shares import RankStepSampler, ShareSchedule
from trainer.membership.entry import (
    admitted,
    joining,
    launched,
    membership_port,
    open_store,
    this_host,
)
from trainer.membership.store import MembershipStore
from trainer.run_layout import RunLayout


@dataclass(frozen=True)
class Joined:
    """A joiner let in: its run (events, schedule), its side of the generations, and the
    step it was let in at (it draws from the next)."""

    run: ScriptRun
    live: LiveShares
    step: int


class LiveEntry:
    """This rank's way into the run's membership (``identity``: what a joiner's must match:
    the helper's arguments and torch)."""

    def __init__(self, settings: ScriptSettings, identity: dict[str, object]) -> None:
        self.settings, self.port = settings, membership_port()
        self.joining = self.port is not None and joining()
        self.identity = {"torch": torch.__version__,
                         "run": json.loads(json.dumps(identity))}

    def _leave_file(self) -> str:
        return RunLayout(self.settings.run_dir).leave_request(this_host())

    def placeholder(self, global_batch: int) -> ShareSchedule:
        """A joiner's schedule until it is let in (alone, equal shares: never drawn from)."""
        return ShareSchedule(replace(self.settings, split=None), global_batch=global_batch,
                             world=1, rank=0)

    def launched(self, run: ScriptRun, sampler: RankStepSampler,
                 model: Callable[[], nn.Module | None], total_steps: int) -> LiveShares | None:
        """A launched rank: generation 0 is the launch's group; its heartbeat starts (armed
        at the first step). None without a membership port."""
        if self.port is None:
            return None
        store = open_store(self.port, serve=run.rank == 0)
        membership = launched(store, run.rank, run.world, self._leave_file(), self.identity)
        _beat(store, membership.member, membership.generation.members, armed=False)
        return LiveShares(membership, run, sampler, model, total_steps=total_steps,
                          backend=dist.get_backend())

    def admitted(self, placeholder: ShareSchedule, device: torch.device,
                 sampler: RankStepSampler, model: Callable[[], nn.Module | None],
                 total_steps: int) -> Joined:
        """A joiner: announce itself, wait to be let in, form the generation's group (its
        own torchrun group let go), take its place; the state follows (``admitted``)."""
        assert self.port is not None
        backend = dist.get_backend() if dist.is_initialized() else "gloo"
        store = open_store(self.port, serve=False)
        membership = admitted(store, self._leave_file(), self.identity)
        plan = membership.joining
        assert plan is not None
        membership.form(backend, device)
        schedule = placeholder.for_generation(len(plan.generation.members), membership.rank,
                                              plan.split, plan.step + 1)
        run = ScriptRun(self.settings, global_batch=placeholder.global_batch, device=device,
                        schedule=schedule, member=membership.member)
        sampler.schedule = schedule
        live = LiveShares(membership, run, sampler, model, total_steps=total_steps,
                          backend=backend)
        live.progress.step = plan.step
        return Joined(run, live, plan.step)


def _beat(store: MembershipStore, member: int, members: tuple[int, ...], *,
          armed: bool) -> None:
    """This rank's heartbeat and its watch on ``members`` (a forming starts them for the
    generations after the launch's)."""
    store.start_heartbeat(member, armed=armed)
    assert store.watch is not None
    store.watch.follow(members)
