"""The rules that relate two or more of the trainer's settings, each written once.

Each field's own rules (choices, bounds) follow from its type and metadata
(``trainer.settings.flags.check_fields``, ``remote.config.value_rules.key_problems``). The
rules here relate fields, e.g. ``min_lr <= lr``. Both sides run this one table over their values:
the trainer's ``TrainConfig`` names the fields as flags (``--eval-every 11 is larger than the
run's --steps 10``), cluster.toml's loader as ``[run]`` keys (``[run] eval_every: 11 is larger
than the run's steps = 10``), through a ``Naming``.

A rule reads only the fields it declares, and is skipped when one of them is missing from the
values (cluster.toml leaves out a key whose type or own value was wrong, so a mistake is
reported once, not again as a knock-on problem here). A rule may read ``WORLD``, the number of
ranks: it runs where that is known (the trainer's ``check_world``, cluster.toml's hosts when
each gives its rank count). Rules that need more (the hosts, the devices) stay with what
knows those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainer.settings.run_settings import DATASETS_ON_DISK, OUTER_LR_MAX

WORLD = "world"
"""The pseudo-field holding the number of ranks, in the values only where it is known."""


def _ranks(world: int) -> str:
    return f"{world} rank" if world == 1 else f"{world} ranks"


@dataclass(frozen=True)
class Naming:
    """How one side writes a field and a value in a message."""

    name: Callable[[str], str]
    """The field as the user writes it: ``--min-lr`` or ``min_lr``."""
    value: Callable[[str, Any], str]
    """A field's value as the user writes it: ``3,4`` or ``[3, 4]``."""
    equals: str
    """Between a name and its value when giving a setting: ``" "`` or ``" = "``."""
    ranks: Callable[[int], str] = _ranks
    """The ranks of the run: ``3 ranks`` or ``3 ranks (a: 1, b: 2)``."""

    def set(self, field: str, value: Any) -> str:
        """A setting as the user writes it: ``--policy static`` or ``policy = "static"``."""
        return f"{self.name(field)}{self.equals}{self.value(field, value)}"


Check = Callable[[Mapping[str, Any], Naming], str]
"""A rule: the problem with these values ("" when none), written after the subject's name."""


@dataclass(frozen=True)
class Relation:
    """One rule: the field it is reported on (the one to fix), the others it reads."""

    subject: str
    fields: tuple[str, ...]
    check: Check


RELATIONS: list[Relation] = []
"""Every relation, in the order they are checked (the trainer reports the first)."""


def relation(subject: str, *others: str) -> Callable[[Check], Check]:
    """Add the decorated check to ``RELATIONS``, reported on ``subject``, reading ``others``."""
    def add(check: Check) -> Check:
        RELATIONS.append(Relation(subject, (subject, *others), check))
        return check
    return add


def problems(values: Mapping[str, Any], naming: Naming,
             reading: str | None = None) -> list[tuple[str, str]]:
    """``(subject, problem)`` for every relation these values break (only those reading the
    field ``reading`` when given); a relation whose fields are not all in ``values`` is
    skipped."""
    found = []
    for rule in RELATIONS:
        if all(f in values for f in rule.fields) and reading in (None, *rule.fields):
            problem = rule.check(values, naming)
            if problem:
                found.append((rule.subject, problem))
    return found


@relation("data_dir", "task", "dataset")
def _data_dir(v: Mapping[str, Any], n: Naming) -> str:
    if v["task"] == "image" and v["dataset"] in DATASETS_ON_DISK and not v["data_dir"]:
        return (f"is required with {n.set('dataset', v['dataset'])}: the directory holding "
                "its python-pickle batches on every host")
    return ""


@relation("samples", "global_batch", "task", "dataset")
def _samples(v: Mapping[str, Any], n: Naming) -> str:
    if (v["task"] == "image" and v["dataset"] == "synthetic_image"
            and v["samples"] < v["global_batch"]):
        return (f"{n.value('samples', v['samples'])} is smaller than "
                f"{n.set('global_batch', v['global_batch'])}: an epoch must hold at least "
                "one step")
    return ""


@relation("epochs", "steps")
def _steps_or_epochs(v: Mapping[str, Any], n: Naming) -> str:
    if v["steps"] is not None and v["epochs"] is not None:
        return (f"is given with {n.name('steps')}: give either {n.name('steps')} or "
                f"{n.name('epochs')}, not both")
    return ""


@relation("policy", "split")
def _proportional(v: Mapping[str, Any], n: Naming) -> str:
    if v["split"] is not None and v["policy"] == "proportional":
        return (f"{n.value('policy', 'proportional')} computes the split itself: drop "
                f"{n.name('split')}, or use {n.set('policy', 'static')} (or dynamic, which "
                f"starts from {n.name('split')})")
    return ""


@relation("split", "global_batch")
def _split(v: Mapping[str, Any], n: Naming) -> str:
    split: Sequence[int] | None = v["split"]
    if split is None:
        return ""
    shown = n.value("split", split)
    if not split:
        return "must not be empty; leave it out for an equal split"
    if any(share < 0 for share in split):
        return f"{shown} has a negative share"
    if sum(split) != v["global_batch"]:
        return (f"{shown} sums to {sum(split)}, but {n.name('global_batch')} is "
                f"{n.value('global_batch', v['global_batch'])}")
    if not any(split):
        return f"{shown} gives every rank 0 samples"
    return ""


@relation("min_lr", "lr")
def _min_lr(v: Mapping[str, Any], n: Naming) -> str:
    if not v["min_lr"] <= v["lr"]:
        return (f"{n.value('min_lr', v['min_lr'])} is above {n.set('lr', v['lr'])}: the "
                f"schedule goes from {n.name('lr')} down to {n.name('min_lr')}")
    return ""


@relation("betas")
def _betas(v: Mapping[str, Any], n: Naming) -> str:
    betas: Sequence[float] = v["betas"]
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        return (f"{n.value('betas', betas)} must be two coefficients, each in [0, 1), like "
                f"{n.value('betas', (0.9, 0.999))}")
    return ""


@relation("nesterov", "momentum")
def _nesterov(v: Mapping[str, Any], n: Naming) -> str:
    if v["nesterov"] and not v["momentum"] > 0:
        return (f"needs {n.name('momentum')} above 0 for SGD's Nesterov step "
                f"(it is {n.value('momentum', v['momentum'])})")
    return ""


def _within_steps(key: str, why: str) -> Check:
    def check(v: Mapping[str, Any], n: Naming) -> str:
        if v["steps"] is not None and v[key] > v["steps"]:
            return (f"{n.value(key, v[key])} is larger than the run's "
                    f"{n.set('steps', v['steps'])}{why}")
        return ""
    return check


relation("eval_every", "steps")(_within_steps("eval_every",
                                              ": no evaluation would ever happen"))
relation("warmup_steps", "steps")(_within_steps("warmup_steps", ""))


@relation("eval_data", "task")
def _eval_data(v: Mapping[str, Any], n: Naming) -> str:
    if v["eval_data"] is not None and v["task"] != "causal_lm":
        return (f"is the causal_lm task's held-out file ({n.set('task', 'causal_lm')}); "
                f"image tasks evaluate {n.name('eval_samples')} (or CIFAR's test batch), "
                "user tasks their own eval_data")
    return ""


@relation("split", WORLD)
def _split_per_rank(v: Mapping[str, Any], n: Naming) -> str:
    split = v["split"]
    if split and len(split) != v[WORLD]:
        return (f"{n.value('split', split)} has {len(split)} shares but the run has "
                f"{n.ranks(v[WORLD])}: give one share per rank, in rank order")
    return ""


@relation("global_batch", "split", WORLD)
def _batch_per_rank(v: Mapping[str, Any], n: Naming) -> str:
    if v["split"] is None and v["global_batch"] < v[WORLD]:
        return (f"{n.value('global_batch', v['global_batch'])} is smaller than the "
                f"{n.ranks(v[WORLD])}: every rank needs at least one sample per step")
    return ""


@relation("round_exchange")
def _round_exchange(v: Mapping[str, Any], n: Naming) -> str:
    if not v["round_exchange"] < 1:
        return (f"{n.value('round_exchange', v['round_exchange'])} must be below 1: it is the "
                "largest fraction of a round the exchange may take")
    return ""


@relation("outer_momentum")
def _outer_momentum(v: Mapping[str, Any], n: Naming) -> str:
    if not v["outer_momentum"] < 1:
        return f"{n.value('outer_momentum', v['outer_momentum'])} must be in [0, 1)"
    return ""


@relation("outer_lr")
def _outer_lr(v: Mapping[str, Any], n: Naming) -> str:
    if not v["outer_lr"] <= OUTER_LR_MAX:
        return (f"{n.value('outer_lr', v['outer_lr'])} must be at most {OUTER_LR_MAX:g}: the "
                "outer step multiplies the islands' averaged change by it (0.7 is the default)")
    return ""


@relation("micro_batch", "exchange")
def _micro_batch_local(v: Mapping[str, Any], n: Naming) -> str:
    given = v["micro_batch"]  # one value ([run]) or one per rank (the trainer's flag)
    if v["exchange"] == "local" and any(m is not None for m in
                                        (given if isinstance(given, tuple) else (given,))):
        return (f"is not supported with {n.set('exchange', 'local')} yet: each island runs "
                f"its share in one pass; leave {n.name('micro_batch')} out, or lower "
                f"{n.name('global_batch')}")
    return ""


@relation("shard_state", "exchange")
def _shard_state_local(v: Mapping[str, Any], n: Naming) -> str:
    if v["shard_state"] != "replicate" and v["exchange"] == "local":
        return (f"is not supported with {n.set('exchange', 'local')}: each island keeps a "
                f"whole replica; use {n.set('shard_state', 'replicate')} or "
                f"{n.set('exchange', 'exact')}")
    return ""
