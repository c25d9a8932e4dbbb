"""Live membership for the plain-DDP helper: a script's own DDP module and optimizer go on in
the same processes when a host leaves or joins, with no line more in the script.

The helper owns the step boundary (the share sampler hands out each step's indices), which is
where the generations driver (trainer/membership/generations.py) changes the group, as in
corral's own loop; ``LiveShares`` implements only the helper's part of it: its place in the
new generation (the shares re-split, this rank's number), the parts made on the new group,
its training state (the model's and the optimizer's state dicts), loading one (a joiner).

How the script's DDP module survives a new process group. torchft keeps an unchanged loop
going by putting a reconfigurable process-group object under DDP and routing DDP's gradient
all-reduce through a communication hook that calls its ``Manager`` (its own DDP subclass
passes a dummy group to DDP): the group behind the hook changes, the module does not. The
script here built ``DDP(model)`` on the default group itself, so that object cannot be
swapped in without a line in the script; but the helper already registers DDP's one comm
hook (its step clock's), which all-reduces on ``dist.group.WORLD`` read at each call: when
the generation re-forms the default group, the same hook reduces over the new one, and its
mean divides by the new world size (``Shares.loss`` scales by the new shares and world). The
only other use of DDP's own group in training, the buffers' broadcast before each forward,
is pointed at the new group by ``reform``. One more thing differs between ranks once the
group changes: DDP lays its gradients into buckets in construction order, then rebuilds the
layout once from the order gradients became ready in the first backward; a joiner's module
has the first layout while the survivors' have the second, and an all-reduce of flat buckets
would add up different parameters' gradients. So once a joiner is in the group the hook
reduces no bucket on its own: it keeps each bucket's buffer and, at the last one, all-reduces
every gradient in the model's own parameter order (``CanonicalReduce``), whatever the layout:
exact for any mix of members, at the cost of DDP's overlap of the all-reduce with the
backward (one all-reduce after it). Before any join (a run without changes, or leaves only)
DDP's own bucket-by-bucket all-reduce runs: the launched ranks share rank 0's rebuilt layout.

Re-wrapping (building the DDP module again on the
new group) was the other way: it needs the script's reference replaced (impossible from the
helper) or the module's ``__init__`` run again in place, which drops the script's own hooks
on it and the reducer's parameter hooks with the old reducer, and costs a broadcast of every
parameter on each change. Limits of the hook way: DDP's reducer keeps its construction group
for ``find_unused_parameters`` (a per-step all-reduce of the used map) and ``static_graph``,
and rebuilds its buckets over it after the first backward: so no change is made before step
2 completed, and a module with ``find_unused_parameters`` or ``static_graph`` is said to keep
the restart path (``live_note``).

A member lost unplanned is not survived here: the script's own collectives (DDP's backward,
its optimizer, its logging) fail inside its code, where no helper can redo the step, so the
run takes the restart path from the script's own snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.nn.parallel import DistributedDataParallel
from torch.optim.optimizer import register_optimizer_step_pre_hook

from trainer.integrations.run import ScriptRun
from trainer.integrations.shares import RankStepSampler
from trainer.membership.generations import Generations
from trainer.membership.members import Membership
from trainer.membership.plan import NextGeneration
from trainer.step.step_records import RunProgress

FIRST_CHANGE_STEP = 2
"""No change before this step completed: DDP rebuilds its buckets over the group it was built
on at the second forward (a joiner's, alone on its own group, needs none)."""


class Flags(NamedTuple):
    """One rank's membership flags from the step's gathered tally (``BoundaryFlags``)."""

    leave: float
    joiners: float


def live_note(model: nn.Module) -> str | None:
    """Why ``model`` cannot go through a live change (None: it can)."""
    if isinstance(model, DistributedDataParallel) and (
            model.find_unused_parameters or model.static_graph):
        return ("the DDP module has find_unused_parameters or static_graph, whose reducer "
                "keeps the group it was built on")
    return None


class CanonicalReduce:
    """A DDP comm hook's reduction that does not depend on DDP's bucket layout: each bucket's
    buffer is kept until the last bucket of the backward, then every gradient is averaged
    over the current default group in one all-reduce, in ``order`` (the model's parameters),
    and written back into the buffers DDP copies the gradients from."""

    def __init__(self, order: Callable[[], list[nn.Parameter]],
                 active: Callable[[], bool]) -> None:
        """``active()``: whether the layouts may differ (a joiner in the group); before
        that, DDP's own all-reduce of each bucket as it is ready (launched ranks share the
        layout rank 0 rebuilt: DDP broadcasts it)."""
        self.order, self.active = order, active
        self._kept: list[tuple[list[torch.Tensor], torch.Tensor]] = []

    def __call__(self, _: object, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        if not self.active():
            return allreduce_hook(None, bucket)  # type: ignore[arg-type]
        buffer = bucket.buffer()
        self._kept.append((bucket.parameters(), buffer))
        if bucket.is_last():
            self._reduce_all()
        done: torch.futures.Future[torch.Tensor] = torch.futures.Future()
        done.set_result(buffer)
        return done

    def _reduce_all(self) -> None:
        kept, self._kept = self._kept, []
        views: dict[int, torch.Tensor] = {}
        for params, buffer in kept:
            offset = 0
            for p in params:
                views[id(p)] = buffer[offset:offset + p.numel()]
                offset += p.numel()
        ordered = [views[id(p)] for p in self.order() if id(p) in views]
        flat = torch.cat(ordered)
        flat.div_(dist.get_world_size())
        dist.all_reduce(flat)
        offset = 0
        for view in ordered:
            view.copy_(flat[offset:offset + view.numel()])
            offset += view.numel()


def script_generations(membership: Membership, loop: Any, run: ScriptRun, *, total_steps: int,
                       backend: str) -> tuple[RunProgress, Generations]:
    """A script opt-in's generations driver for ``loop`` (its ``GenerationLoop`` side), with the
    run's progress: a loss never aborts the script's step (the opt-in redoes nothing itself),
    and the run's flags and event members follow the membership."""
    progress = RunProgress(total_steps=total_steps)
    group = Generations(membership, loop, run.events, progress, backend=backend,
                        device=run.device, global_batch=run.global_batch, abort_on_loss=False)
    run.flags = membership.flags
    run.events.members = membership.generation.members
    return progress, group


def still_in(loop: Any, step: int, rows: list[list[float]]) -> bool:
    """A script opt-in's step end (``loop``: its ``progress``, ``group``, ``run`` and ``split``):
    step ``step`` completed with its tally gathered (``rows``, flags last); the driver is armed
    after the first step, and from ``FIRST_CHANGE_STEP`` on the change the flags ask for is
    made. False when this rank's host left the run."""
    loop.progress.step = step
    if step == 1:
        loop.group.arm()
        loop.group.keep_written(loop.run.settings.policy, loop.split)
    if step < FIRST_CHANGE_STEP or step >= loop.progress.total_steps:
        return True
    return bool(loop.group.boundary([Flags(row[-2], row[-1]) for row in rows]))


class LiveShares:
    """The DDP helper's side of the generations driver for one rank (``GenerationLoop``):
    ``run`` (its schedule and events), ``sampler`` (its position), ``model()`` (the DDP
    module once the script has shown it)."""

    def __init__(self, membership: Membership, run: ScriptRun, sampler: RankStepSampler,
                 model: Callable[[], nn.Module | None], *, total_steps: int,
                 backend: str) -> None:
        self.run, self.sampler, self.model = run, sampler, model
        self.progress, self.group = script_generations(membership, self, run,
                                                       total_steps=total_steps, backend=backend)
        self.mixed = membership.joining is not None
        """Whether a joiner is (or was) in the group: its DDP bucket layout differs from the
        launched ranks', so the gradients are reduced in the model's order from then on."""
        self.optimizer: torch.optim.Optimizer | None = None
        """The script's optimizer of the model, seen at its first step."""
        self._held: dict[str, Any] = {}
        """A joiner's received state not loaded yet (its model or optimizer not seen yet)."""
        self._hooks = [
            register_optimizer_step_pre_hook(self._optimizer_step),
            register_module_forward_pre_hook(self._forward)]

    @property
    def split(self) -> tuple[int, ...]:
        return self.run.schedule.split_at_quietly(self.progress.step + 1)

    def after_step(self, step: int, rows: list[list[float]]) -> bool:
        """Step ``step`` completed and its tally was gathered (``rows``, flags last): the
        change it asks for, if any. False when this rank's host left."""
        if still_in(self, step, rows):
            return True
        self.sampler.ended = True
        self._alone()
        return False

    # -- what the generations driver calls ---------------------------------------------------
    def take_place(self, plan: NextGeneration, rank: int) -> None:
        """This rank's place in ``plan``'s generation: the shares re-split from the next
        step on (the data order is the run's, by step: nothing skipped or seen twice)."""
        schedule = self.run.schedule.for_generation(len(plan.generation.members), rank,
                                                    plan.split, plan.step + 1)
        self.run.moved(schedule)
        self.sampler.schedule = schedule
        self.mixed = self.mixed or plan.change == "joined"

    def reduce_for(self, model: nn.Module) -> CanonicalReduce:
        """The comm hook's reduction for ``model`` (the helper's clock calls it)."""
        return CanonicalReduce(lambda: [p for p in model.parameters() if p.requires_grad],
                               lambda: self.mixed)

    def reform(self) -> None:
        """The script's DDP module on the new group: its comm hook reduces over the current
        default group at each call; its buffers' broadcast is pointed there too."""
        model = self.model()
        if isinstance(model, DistributedDataParallel):
            model.process_group = dist.distributed_c10d._get_default_group()

    def training_state(self) -> dict[str, Any]:
        """The model's parameters and buffers and the optimizer's state (a joiner's)."""
        model = self.model()
        inner = getattr(model, "module", model)
        return {"model": inner.state_dict() if inner is not None else None,
                "optimizer": self.optimizer.state_dict() if self.optimizer else None}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Another rank's ``training_state``: each part loaded now if this rank's model or
        optimizer is known, else when it is first used (its first forward, its first step)."""
        self._held = {k: v for k, v in state.items() if v is not None}
        model = self.model()
        if model is not None:
            self._load_model(model)

    # -- the script's model and optimizer, as they are used ------------------------------------
    def _forward(self, module: nn.Module, args: Any) -> None:
        if "model" in self._held and isinstance(module, DistributedDataParallel):
            self._load_model(module)

    def _load_model(self, model: nn.Module) -> None:
        with torch.no_grad():
            getattr(model, "module", model).load_state_dict(self._held.pop("model"))

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """The optimizer of the model (its parameters), seen at its first step; a joiner's
        takes the run's state there, before it steps."""
        if self.optimizer is not None:
            return
        model = self.model()
        ours = {id(p) for p in model.parameters()} if model is not None else set()
        if not any(id(p) in ours for g in optimizer.param_groups for p in g["params"]):
            return
        self.optimizer = optimizer
        if "optimizer" in self._held:
            optimizer.load_state_dict(self._held.pop("optimizer"))

    def _alone(self) -> None:
        """This rank's host left: the script's code after its loop (a barrier, destroying
        the group, saving) runs in a group of its own, never waiting for the others."""
        for hook in self._hooks:
            hook.remove()
        dist.destroy_process_group()
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
