"""How the Hugging Face opt-in's rank enters the run's live membership
(``CORRAL_MEMBERSHIP_PORT``), as the DDP helper's does (``ddp_entry.py``): a launched rank's
generation 0 is the launch's group; a joiner (``corral join``) is let in at its
``on_train_begin``, its model, optimizer and scheduler built, and takes its place and the run's
state there (``hf_live.py``).

One thing a joiner cannot know from its own launch: the run's global batch. The Trainer's is
``per_device_train_batch_size x world size x gradient_accumulation_steps``, and a joiner is
launched alone (a world of one): launch rank 0 writes the run's in the store, and a joiner's
loader is cut from it."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from profiles.user_errors import UsageError
from trainer.integrations.contract import ScriptSettings
from trainer.integrations.hf_live import HFLive, RankRoundSampler, at_least, live_refusal
from trainer.integrations.run import ScriptRun
from trainer.integrations.shares import ShareSchedule
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
from trainer.step.batch_order import GlobalBatchOrder

GLOBAL_BATCH_KEY = "hf/global_batch"
"""The run's global batch in the membership store (written by launch rank 0)."""


class HFEntry:
    """This rank's way into the run's membership (``identity``: what a joiner's must match)."""

    def __init__(self, settings: ScriptSettings, identity: dict[str, object]) -> None:
        self.settings, self.port = settings, membership_port()
        self.joining = self.port is not None and joining()
        self.identity = {"torch": torch.__version__, "run": json.loads(json.dumps(identity))}
        self._store: MembershipStore | None = None

    def store(self, rank: int) -> MembershipStore:
        """The run's store (launch rank 0 serves it)."""
        if self._store is None:
            assert self.port is not None
            self._store = open_store(self.port, serve=rank == 0 and not self.joining)
        return self._store

    def run_global_batch(self) -> int:
        """A joiner's: the run's global batch, as launch rank 0 wrote it."""
        return int(self.store(0).get(GLOBAL_BATCH_KEY))

    def wants_live(self, trainer: Any, *, say: bool) -> bool:
        """Whether this rank takes part in live membership: a membership port, and nothing in
        the Trainer's setup that keeps the launch's group (``live_refusal``: rank 0 says it
        when ``say``; a joiner refuses itself)."""
        if self.port is None:
            return False
        refusal = live_refusal(trainer)
        if refusal is not None and self.joining:
            raise UsageError(f"this host cannot join the run live: {refusal}")
        if refusal is not None and say and trainer.args.process_index == 0:
            print(f"corral: {refusal}: a host leaving or joining breaks it; "
                  "`corral leave --restart` instead", file=sys.stderr, flush=True)
        return refusal is None

    def loader(self, dataset: Any, collator: Any, args: Any, schedule: ShareSchedule | None
               ) -> tuple[DataLoader, RankRoundSampler]:
        """The live loader: this rank's rounds of each step, cut when the Trainer asks for
        them (``hf_live``), on ``schedule`` (None: a joiner's, from the run's global batch,
        alone until it is let in)."""
        if schedule is None:
            schedule = ShareSchedule(replace(self.settings, split=None),
                                     global_batch=self.run_global_batch(), world=1, rank=0)
        order = GlobalBatchOrder(len(dataset), schedule.global_batch,
                                 args.data_seed if args.data_seed is not None else args.seed)
        sampler = RankRoundSampler(order, schedule, rounds=args.gradient_accumulation_steps)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collator,
                          pin_memory=args.dataloader_pin_memory), sampler

    def _leave_file(self) -> str:
        return RunLayout(self.settings.run_dir).leave_request(this_host())

    def launched(self, run: ScriptRun, sampler: RankRoundSampler, trainer: Any,
                 total_steps: int) -> HFLive:
        """A launched rank: generation 0 is the launch's group; its heartbeat starts (armed
        at the first step)."""
        store = self.store(run.rank)
        if run.rank == 0:
            store.set(GLOBAL_BATCH_KEY, str(run.global_batch))
        membership = launched(store, run.rank, run.world, self._leave_file(), self.identity)
        store.start_heartbeat(membership.member, armed=False)
        assert store.watch is not None
        store.watch.follow(membership.generation.members)
        return HFLive(membership, run, sampler, trainer, total_steps=total_steps,
                      backend=dist.get_backend())

    def admitted(self, global_batch: int, device: torch.device, sampler: RankRoundSampler,
                 trainer: Any, total_steps: int) -> HFLive:
        """A joiner: announce itself, wait to be let in, form the generation's group (its own
        launch's let go), take its place and the run's state. ``JoinRefused`` names why
        rank 0 refused it."""
        backend = dist.get_backend() if dist.is_initialized() else "gloo"
        membership = admitted(self.store(0), self._leave_file(), self.identity)
        plan = membership.joining
        assert plan is not None
        membership.form(backend, device)
        alone = ShareSchedule(replace(self.settings, split=None), global_batch=global_batch,
                              world=1, rank=0)
        schedule = alone.for_generation(len(plan.generation.members), membership.rank,
                                        at_least(tuple(plan.split), sampler.rounds),
                                        plan.step + 1)
        run = ScriptRun(self.settings, global_batch=global_batch, device=device,
                        schedule=schedule, member=membership.member)
        sampler.schedule = schedule
        live = HFLive(membership, run, sampler, trainer, total_steps=total_steps,
                      backend=backend)
        live.progress.step = plan.step
        live.reform()
        live.group.admitted()  # the run's state (collective with the generation)
        return live
