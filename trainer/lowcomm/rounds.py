"""The training loop of ``--exchange local`` (APPROXIMATE; docs/lowcomm.md).

Reads like trainer/exact_loop.py: build model and optimizer, maybe resume, then rounds until the
run's last step. A round: each island trains its inner steps (``RoundPlan``) on the run's
global batches with the run's optimizer, the ranks of an island exactly data-parallel (the
summed gradient over the island divided by its loss units, as the exact mode does over the
world); then one outer step over the islands (trainer/lowcomm/outer.py); then one small
all-gather of every rank's tally. Every rank runs the same number of rounds and reaches every
collective in the same order. Checkpoints, evaluations and the stop request happen at a round's
end, where every rank holds the same parameters.
"""

from __future__ import annotations

import os
import socket
import time
from functools import partial
from typing import Any

import torch
import torch.distributed as dist

from profiles.user_errors import UsageError
from trainer.balance.solve import equal_split
from trainer.checkpoint.checkpointer import restore, resume, write_final
from trainer.compat import set_tf32, tf32_enabled, use_deterministic_convolutions
from trainer.dist import RankInfo, on_any_rank, print0
from trainer.evaluate import Evaluator, held_out
from trainer.event_log import EventWriter
from trainer.events import RoundEvent
from trainer.lowcomm.islands import (
    carried_speeds,
    finish_round,
    load_outer_state,
    outer_state,
    speeds_after,
)
from trainer.lowcomm.outer import IslandGroups, OuterStep
from trainer.lowcomm.plan import (
    FIRST_ROUND_STEPS,
    RoundPlan,
    island_split,
    islands_of,
    next_round_steps,
    plan_round,
)
from trainer.lowcomm.saving import RoundSaver
from trainer.lowcomm.schedule import islands_at, parse_schedule
from trainer.lowcomm.steps import InnerSteps, RoundTally
from trainer.membership.generations import generations_for
from trainer.membership.members import Membership
from trainer.membership.plan import NextGeneration, config_for
from trainer.placement import Placement
from trainer.settings.train_config import TrainConfig
from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.optim import OptimizerStep, make_optimizer
from trainer.step.slowdown import SlowdownSchedule, emulates
from trainer.step.step_records import RunProgress
from trainer.step_report import (
    LossTally,
    OptimizerFacts,
    global_loss_of,
    report_start,
    report_step,
)
from trainer.stopping import StopSignals, check_finite_loss
from trainer.tasks import Task, trainable_parameters
from trainer.tasks.loader import task_label


def _set_arithmetic(config: TrainConfig, device: torch.device) -> None:
    """fp32 is IEEE float32 (torch's default lets cuDNN use TF32 even in fp32), and on a GPU
    one seed gives the same bits (a last bit flipped can flip a quantised code)."""
    set_tf32(config.precision == "tf32")
    if device.type == "cuda":
        use_deterministic_convolutions()


APPROXIMATE = "approximate: --exchange local (islands average their changes every round)"
"""The start event's ``exact_note`` of a local run."""


def island_ids(config: TrainConfig, world: int) -> list[Any]:
    """Every rank's island: ``--islands``, else its torchrun node (one host), gathered."""
    if config.islands is not None:
        return list(config.islands)
    mine = (os.environ.get("GROUP_RANK", "0"), socket.gethostname())
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    return gathered


def _check_live(config: TrainConfig) -> None:
    """Live membership takes islands as hosts and an exchange finished at each round's end."""
    if config.islands or config.island_schedule or config.outer_overlap:
        raise UsageError("live membership in a low-communication run takes islands as "
                         "hosts and an exchange finished at each round's end: leave out "
                         "--islands, --island-schedule and --outer-overlap")


class LocalTrainer:
    """One rank of a local-exchange run, after it joined the process group. With live
    membership (islands are hosts) its generations are driven by ``Generations``
    (trainer/membership/), which calls back ``take_place``, ``reform``, ``training_state`` and
    ``load_training_state`` (trainer/lowcomm/islands.py); without it by ``FixedGroup``."""

    def __init__(self, config: TrainConfig, info: RankInfo, device: torch.device, backend: str,
                 task: Task, order: GlobalBatchOrder, events: EventWriter, stop: StopSignals,
                 run: RunProgress, placement: Placement | None = None,
                 membership: Membership | None = None) -> None:
        """``placement``: where this rank runs (applied before; the exact loop's signature)."""
        self.group = generations_for(membership, self, events, run, backend=backend,
                                     device=device, global_batch=config.global_batch,
                                     abort_on_loss=False)
        self.dropped: tuple[str, ...] = ()  # hosts lost in the round under way: out of it
        self.carried_speeds: dict[str, float] | None = None  # by host, while a generation forms
        if self.group.live:
            _check_live(config)
        self.schedule = parse_schedule(config.island_schedule or "")
        self.config, self.task, self.order, self.run = config, task, order, run
        self.rank, self.world, self.device, self.events = info.rank, info.world_size, device, events
        self.stop = stop
        _set_arithmetic(config, device)
        self.model = task.model.to(device).train()
        self.parameters = trainable_parameters(task)
        if not self.parameters:
            raise UsageError(f"the {config.task} task has no parameter to train")
        self.optimizer = make_optimizer(config, self.parameters)
        # world 1: the island's summed gradient is divided by the island's units alone.
        self.optim_step = OptimizerStep(config, self.optimizer, self.parameters, device, 1,
                                        run.total_steps)
        self.groups = self.make_groups()
        self.outer = OuterStep(self.parameters, self.groups, lr=config.outer_lr,
                               momentum=config.outer_momentum,
                               compression=config.outer_compression,
                               overlap=config.outer_overlap)
        split = config.split or equal_split(config.global_batch, self.world)
        self.split = split
        self.speeds = [float(sum(split[r] for r in ranks)) for ranks in self.groups.islands]
        """Each island's speed, the inner steps' weights: the split's shares (``static``),
        measured every round (``dynamic``) or after the first (``proportional``)."""
        self.round_steps: int | None = config.round_steps
        self.inner = InnerSteps(
            config, task=task, order=order, model=self.model, parameters=self.parameters,
            optim_step=self.optim_step, groups=self.groups, device=device, rank=self.rank,
            shares=island_split(split, self.groups.ranks, config.global_batch),
            emulated=on_any_rank(emulates(config.slowdown, config.slowdown_at), device))
        self.saver = RoundSaver(config, rank=self.rank, events=events, model=self.model,
                                optimizer=self.optimizer, optim_step=self.optim_step,
                                outer=self.outer, groups=self.groups)
        resumed = resume(config, rank=self.rank, device=device)
        restore(resumed, model=self.model, optimizer=self.optimizer,
                load_training=self.optim_step.load_state_dict, run=run, world=self.world,
                policy=config.policy)
        if resumed is not None:
            self.speeds, self.round_steps = self.saver.load(resumed[1], device, self.speeds,
                                                            self.round_steps)
        self.evaluator = Evaluator(
            task=task, data=held_out(task, config.eval_samples, config.task),
            every=config.eval_every, model=self.model, rank=self.rank, device=device,
            precision=config.precision, micro_batch=(None,), events=events,
        ) if config.eval_every else None
        self.group.admitted()  # a joiner: the outer state
        self._announce(backend, resumed[0] if resumed else None)

    def make_groups(self) -> IslandGroups:
        """The islands' groups (collective): ``--islands``, else each host's ranks (with live
        membership, the generation's hosts)."""
        generation = self.group.generation
        islands = (islands_of(list(generation.hosts)) if generation is not None
                   else islands_of(island_ids(self.config, self.world)))
        groups = IslandGroups(islands, self.rank)
        self.island_hosts = (tuple(generation.hosts[ranks[0]] for ranks in groups.islands)
                             if generation is not None else ())
        """Each island's host (islands are hosts with live membership); empty without it."""
        return groups

    # -- what the generations driver calls (trainer/membership/generations.py) -------------
    def take_place(self, plan: NextGeneration, rank: int) -> None:
        """This rank's place (``rank``) in ``plan``'s generation, before its group forms; the
        islands' speeds by host kept (a forming retried keeps what the first one found)."""
        if self.carried_speeds is None:
            self.carried_speeds = carried_speeds(self.island_hosts, self.speeds)
        self.rank, self.world = rank, len(plan.generation.members)
        self.config = config_for(self.config, plan.kept, plan.split)
        self.split = plan.split
        self.inner.slowdown = SlowdownSchedule(self.config.slowdown_for(rank), (), rank)

    def reform(self) -> None:
        """The islands made on the new group (kept islands keep their speed, inner optimizer
        and residual; a joiner's island the others' mean speed), and every part that holds
        their groups takes them (collective: the groups, then whether some rank emulates a
        slowdown)."""
        groups = self.make_groups()
        self.groups = self.inner.groups = self.saver.groups = groups
        self.inner.shares = island_split(self.split, groups.ranks, self.config.global_batch)
        self.inner.emulated = on_any_rank(
            emulates(self.config.slowdown, self.config.slowdown_at), self.device)
        self.outer.regroup(groups)
        assert self.carried_speeds is not None
        self.speeds = speeds_after(self.carried_speeds, self.island_hosts)
        self.carried_speeds = None

    def training_state(self) -> dict[str, Any]:
        """The outer state (``outer_state``, trainer/lowcomm/islands.py)."""
        return outer_state(self.outer, self.run.step, self.speeds, self.round_steps)

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.run.step, self.speeds, self.round_steps = load_outer_state(
            self.outer, state, self.device)

    def _announce(self, backend: str, resumed_from: str | None) -> None:
        config, run = self.config, self.run
        model, dataset = task_label(config)
        report_start(
            self.events, rank=self.rank, world=self.world, host=socket.gethostname(),
            device=str(self.device), device_name=str(self.device),
            backend=backend, model=model, dataset=dataset, global_batch=config.global_batch,
            split=tuple(self.split), policy=config.policy, step=run.step,
            total_steps=run.total_steps, steps_per_epoch=self.order.steps_per_epoch,
            slowdown=self.inner.slowdown.factor_at(run.step + 1),
            resumed_from=resumed_from, task=config.task, precision=config.precision,
            exact=False, exact_note=APPROXIMATE, exchange="local", tf32=tf32_enabled())
        islands = " | ".join(",".join(map(str, r)) for r in self.groups.islands)
        print0(f"corral trainer: APPROXIMATE run (--exchange local): {self.world} ranks "
               f"({backend}) in {len(self.groups.islands)} islands [{islands}], {model} on "
               f"{dataset}, B={config.global_batch}, steps {run.step}->{run.total_steps}")

    def fit(self) -> None:
        """Rounds until the run's last step or a stop request, then the final result."""
        run = self.run
        self.group.arm()
        while run.step < run.total_steps and not run.stopping:
            before = run.step
            active, dropped = islands_at(self.schedule, run.step, len(self.groups.islands))
            plan = plan_round(run.step, run.total_steps, self.round_steps or FIRST_ROUND_STEPS,
                              [s if i in active else 0.0 for i, s in enumerate(self.speeds)],
                              len(active))
            hosts = self.island_hosts
            started = time.perf_counter()
            pending = self.outer.pending
            mine = self.inner.run_round(plan, pending.poll if pending else lambda: None)
            mine.in_flight_s = (pending.in_flight_s or 0.0) if pending else 0.0
            mine.stop = 1.0 if self.stop.signum is not None else 0.0
            silent = self.groups.index not in active or self.groups.index in dropped
            weights = [0 if i in dropped else n * self.config.global_batch
                       for i, n in enumerate(plan.steps)]
            tallies, self.dropped = finish_round(
                self.group, self.outer, plan, mine, weights, partial(
                    self._exchange, mine, silent=silent,
                    # The run's last round waits for its exchange, and so does the first when
                    # the run chooses the round length: its exchange, whole, is the measurement.
                    final=plan.last_step == run.total_steps or self.round_steps is None),
                self._gather, hosts, lambda: self.island_hosts)
            if tallies is None:
                return  # this rank's host was cut off: the others went on without it
            run.step = plan.last_step
            run.stopping = any(t.stop > 0 for t in tallies)
            check_finite_loss(sum(t.loss_sum for t in tallies), run)
            self._learn(plan, tallies)
            self._report(plan, mine, tallies, time.perf_counter() - started, hosts)
            if not self.group.guarded(partial(self._after_round, before)):
                return  # this rank's host was cut off: the others went on without it
            if not self.group.boundary(tallies):
                return  # this rank's host left at the round's end: nothing more to write
        self.saver.save(run, run.step - 1, self.speeds, self.round_steps, last=True)
        if self.rank == 0 and run.step == run.total_steps:
            print0(f"corral trainer: the trained result is in "
                   f"{write_final(self.task, self.model, self.config.run_dir)}")
        self.outer.settle()  # a stopped run's exchange under way ends before the ranks leave
        dist.barrier()

    def _exchange(self, mine: RoundTally, weights: list[int], *, final: bool, silent: bool
                  ) -> None:
        """The outer step over the islands, each weighted by ``weights`` (its samples this
        round; 0: left out). ``silent``: this island is outside the round or dropped from it
        (``--island-schedule``): it sends nothing."""
        if silent:
            self.outer.silence()
        started = time.perf_counter()
        self.outer.step(weights, final=final)
        mine.exchange_s = time.perf_counter() - started

    def _gather(self, mine: RoundTally) -> list[RoundTally]:
        """Every rank's tally of the round, by rank (one small all-gather)."""
        local = torch.tensor(mine.as_list(), dtype=torch.float64)
        parts = [torch.zeros_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        return [RoundTally.from_list(p.tolist()) for p in parts]

    def _learn(self, plan: RoundPlan, tallies: list[RoundTally]) -> None:
        """From the round's measurements (the same on every rank, so every rank decides the
        same): the islands' speeds and, when not given, the round length."""
        leaders = [tallies[ranks[0]] for ranks in self.groups.islands]
        measure = len(leaders) == len(plan.steps) and (  # not when an island was lost
            self.config.policy == "dynamic"
            or (self.config.policy == "proportional" and plan.first_step == 1))
        if measure:
            self.speeds = [n / t.inner_s if n and t.inner_s > 0 else old
                           for n, t, old in zip(plan.steps, leaders, self.speeds, strict=True)]
        if len(leaders) < 2:  # one island: nothing is exchanged
            self.round_steps = self.round_steps or FIRST_ROUND_STEPS
            return
        steps_per_island = sum(plan.steps) / len(plan.steps)
        step_s = max(t.inner_s for t in leaders) / max(steps_per_island, 1)
        exchange_s = min(t.exchange_s for t in leaders)
        if self.config.round_steps is None:  # chosen after the first round, then held
            self.round_steps = next_round_steps(self.round_steps, exchange_s, step_s,
                                                self.config.round_exchange,
                                                self.config.outer_overlap)

    def _report(self, plan: RoundPlan, mine: RoundTally, tallies: list[RoundTally],
                round_s: float, hosts: tuple[str, ...]) -> None:
        """Every rank its ``step`` event for the round; rank 0 the ``round`` event (``hosts``:
        each island's host when the round started, with live membership)."""
        run, config = self.run, self.config
        losses = [LossTally(loss_sum=t.loss_sum, units=t.units) for t in tallies]
        report_step(self.events, rank=self.rank, step=run.step,
                    epoch=self.order.epoch_of(run.step), local_batch=int(mine.samples),
                    tallies=losses, compute_s=mine.inner_s, step_s=round_s,
                    optimizer=OptimizerFacts(lr=self.optim_step.schedule.lr_at(run.step)))
        if self.rank != 0:
            return
        samples = sum(plan.steps) * config.global_batch
        sent = self.outer.sent
        leaders = [tallies[ranks[0]] for ranks in self.groups.islands]
        self.events.emit(RoundEvent(
            t=time.time(), rank=0, step=run.step, first_step=plan.first_step,
            inner_steps=plan.steps, islands=self.groups.islands, round_s=round_s,
            inner_s=tuple(round(t.inner_s, 6) for t in leaders),
            exchange_s=min(t.exchange_s for t in leaders), exchanged_bytes=sent,
            bytes_per_sample=sent / samples, round_steps=self.round_steps or 0,
            compression=config.outer_compression, overlap=config.outer_overlap,
            in_flight_s=min(t.in_flight_s for t in leaders),
            island_exchange_s=tuple(round(t.exchange_s, 6) for t in leaders),
            inner_cpu_s=tuple(round(t.inner_cpu_s, 6) for t in leaders), island_hosts=hosts,
            dropped=self.dropped))
        print0(f"step {run.step}/{run.total_steps} loss {global_loss_of(losses):.4f} "
               f"{samples / round_s:.1f} samples/s (approximate) round "
               f"{'+'.join(map(str, plan.steps))} inner steps, {round_s:.2f} s, "
               f"{sent / samples:.0f} bytes/sample exchanged ({config.outer_compression}"
               f"{', overlapped' if config.outer_overlap else ''}, "
               f"{min(t.exchange_s for t in leaders):.2f} s exposed)")

    def _after_round(self, before: int) -> None:
        """The evaluation and the checkpoint a round's end may be due (collective)."""
        self._evaluate(before)
        self.saver.save(self.run, before, self.speeds, self.round_steps)

    def _evaluate(self, before: int) -> None:
        """The held-out set when the round crossed a multiple of ``eval_every`` or ended the
        run (every rank: it is collective)."""
        run, every = self.run, self.config.eval_every
        if self.evaluator is None:
            return
        if run.step // every > before // every or run.step == run.total_steps:
            self.evaluator.run(run.step, self.split)
