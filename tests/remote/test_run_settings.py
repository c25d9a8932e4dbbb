"""A ``[run]`` key the trainer shares is one field
(``trainer.settings.run_settings.RunSettings``): its cluster.toml key, its trainer flag and
its launch flag all come from that field. A rule relating settings
(``trainer.settings.relations``) is written once: the trainer's flags and cluster.toml's
``[run]`` both enforce it, each naming the fields its own way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pytest
import tomllib

import remote.config.read
import remote.config.rules
import remote.run.launch
from profiles.user_errors import UsageError
from remote.checks.plan import HostPlan
from remote.config.cluster import SECTIONS, ConfigError, HostSection, RunSection
from remote.config.read import parse_cluster
from remote.config.rules import KEY_NAMING
from remote.run.launch import LaunchPlan, trainer_flags
from trainer.settings import flags, relations
from trainer.settings.run_settings import RunSettings, setting
from trainer.settings.train_config import TrainConfig, check_world, parse_config

CLUSTER = """\
[cluster]
name = "lab"

[[hosts]]
name = "a"
address = "local"
gpus = 0
"""
PLAN = LaunchPlan(run_id="r", run_dir="/tmp/r", code_digest="d", master_addr="127.0.0.1",
                  port=1, nnodes=1, user=None, backend="gloo")
HOST = HostPlan(host=HostSection(name="a", address="local", gpus=0), node_rank=0, first_rank=0,
                nproc=1, device="cpu", gpus=0, visible_devices=None, interface=None,
                local_addr=None)

EVERY_KEY_CHANGED = """\
[run]
task = "causal_lm"
model = "resnet50"
dataset = "cifar10"
data_dir = "/data/cifar"
samples = 500
global_batch = 40
policy = "proportional"
rebalance_every = 3
steps = 30
lr = 0.5
optimizer = "adamw"
momentum = 0.5
nesterov = true
weight_decay = 0.01
betas = [0.8, 0.99]
eps = 1e-6
seed = 11
checkpoint_every = 7
backend = "gloo"
precision = "bf16"
lr_schedule = "linear"
warmup_steps = 2
min_lr = 0.25
clip_grad = 3.0
eval_every = 6
eval_samples = 80
eval_data = "held.txt"
exchange = "local"
round_steps = 12
round_exchange = 0.1
outer_lr = 0.5
outer_momentum = 0.8
outer_compression = "none"
outer_overlap = true
"""
"""Every key ``[run]`` shares with the trainer, not at its default (``split``, ``epochs``:
below; ``split`` and ``proportional`` exclude each other, ``steps`` and ``epochs`` too)."""


def test_every_shared_run_key_arrives_at_the_trainer_as_written() -> None:
    run = parse_cluster(CLUSTER + EVERY_KEY_CHANGED, path=Path("cluster.toml")).run
    # shard_state: with exchange = "local" (written above) refused, so written below.
    written = {f.name for f in fields(RunSettings)} - {"epochs", "split", "shard_state"}
    defaults = RunSettings()
    assert all(getattr(run, n) != getattr(defaults, n) for n in written)
    config = parse_config(trainer_flags(run, HOST, PLAN))
    for name in written:
        assert getattr(config, name) == getattr(run, name), name
    with_split = parse_cluster(CLUSTER + "[run]\nglobal_batch = 40\nsplit = [40]\n",
                               path=Path("cluster.toml")).run
    assert parse_config(trainer_flags(with_split, HOST, PLAN)).split == (40,)
    by_epochs = parse_cluster(CLUSTER + "[run]\nepochs = 2\n", path=Path("cluster.toml")).run
    assert parse_config(trainer_flags(by_epochs, HOST, PLAN)).epochs == 2
    sharded = parse_cluster(CLUSTER + '[run]\nshard_state = "gradients"\n',
                            path=Path("cluster.toml")).run
    assert parse_config(trainer_flags(sharded, HOST, PLAN)).shard_state == "gradients"
    # A host's state budget reaches its ranks (each gathers every rank's at start).
    budgeted = replace(HOST, host=replace(HOST.host, state_budget=6.5))
    assert parse_config(trainer_flags(sharded, budgeted, PLAN)).state_budget == (6.5,)


@dataclass(frozen=True, kw_only=True)
class KnobSettings(RunSettings):
    """``RunSettings`` with one setting more, written the way any new setting is."""

    knob_level: int = field(default=3, metadata=setting("extras", at_least=1))
    """How far the knob is turned."""


@dataclass(frozen=True, kw_only=True)
class KnobConfig(TrainConfig, KnobSettings):
    """The trainer's config, had ``knob_level`` been added to ``RunSettings``."""


@dataclass(frozen=True, kw_only=True)
class KnobRun(RunSection, KnobSettings):
    """``[run]``, had ``knob_level`` been added to ``RunSettings``."""


@pytest.fixture
def knob_added(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand the Knob classes in for the real ones, as if the field were in RunSettings."""
    monkeypatch.setattr(remote.config.rules, "RunSettings", KnobSettings)
    monkeypatch.setattr(remote.config.read, "RunSection", KnobRun)
    monkeypatch.setitem(SECTIONS, "run", KnobRun)
    monkeypatch.setattr(remote.run.launch, "RunSettings", KnobSettings)
    monkeypatch.setattr(remote.run.launch, "TrainConfig", KnobConfig)


@pytest.mark.usefixtures("knob_added")
def test_a_new_run_setting_is_a_key_a_flag_and_a_launch_flag_without_further_code() -> None:
    run = parse_cluster(CLUSTER + "[run]\nknob_level = 5\n", path=Path("cluster.toml")).run
    assert isinstance(run, KnobRun) and run.knob_level == 5
    words = trainer_flags(run, HOST, PLAN)
    assert words[words.index("--knob-level") + 1] == "5"
    parser = flags.build_parser(KnobConfig, prog="t", description="d")
    assert "How far the knob is turned." in parser.format_help()
    assert KnobConfig(**flags.parsed_values(KnobConfig, parser.parse_args(words))).knob_level == 5
    with pytest.raises(ConfigError) as bad:
        parse_cluster(CLUSTER + "[run]\nknob_level = 0\nknob_levl = 1\n",
                      path=Path("cluster.toml"))
    assert "cluster.toml: [run] knob_level: must be at least 1, got 0" in str(bad.value)
    assert "[run] knob_levl: unknown key; did you mean 'knob_level'?" in str(bad.value)


def toml_problems(values: Mapping[str, Any], ranks: int = 1) -> str:
    """The problems cluster.toml's loader reports for a ``[run]`` with these values, on one
    host running ``ranks`` ranks."""
    run = "".join(f"{KEY_NAMING.set(key, value)}\n" for key, value in values.items())
    with pytest.raises(ConfigError) as info:
        parse_cluster(f"{CLUSTER}nproc = {ranks}\n[run]\n{run}", path=Path("cluster.toml"))
    return str(info.value)


def _eval_samples_within_batch(v: Mapping[str, Any], n: relations.Naming) -> str:
    if v["eval_samples"] is not None and v["eval_samples"] < v["global_batch"]:
        return (f"{n.value('eval_samples', v['eval_samples'])} is smaller than "
                f"{n.set('global_batch', v['global_batch'])}")
    return ""


def test_a_relation_added_to_the_table_is_enforced_by_the_trainer_and_cluster_toml(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rule = relations.Relation("eval_samples", ("eval_samples", "global_batch"),
                              _eval_samples_within_batch)
    monkeypatch.setattr(relations, "RELATIONS", [*relations.RELATIONS, rule])
    with pytest.raises(UsageError, match=r"^--eval-samples 8 is smaller than --global-batch 16$"):
        parse_config(["--eval-samples", "8", "--global-batch", "16"])
    assert ("cluster.toml: [run] eval_samples: 8 is smaller than global_batch = 16"
            in toml_problems({"eval_samples": 8, "global_batch": 16}))
    assert parse_config(["--eval-samples", "16", "--global-batch", "16"]).eval_samples == 16
    assert RunSection(eval_samples=16, global_batch=16).eval_samples == 16
    monkeypatch.undo()
    assert parse_config(["--eval-samples", "8", "--global-batch", "16"]).eval_samples == 8


RELATION_CASES = """\
dataset = "cifar10"
--data-dir is required with --dataset cifar10: the directory holding its python-pickle batches \
on every host
[run] data_dir: is required with dataset = "cifar10": the directory holding its python-pickle \
batches on every host

samples = 10; global_batch = 32
--samples 10 is smaller than --global-batch 32: an epoch must hold at least one step
[run] samples: 10 is smaller than global_batch = 32: an epoch must hold at least one step

steps = 5; epochs = 2
--epochs is given with --steps: give either --steps or --epochs, not both
[run] epochs: is given with steps: give either steps or epochs, not both

policy = "proportional"; split = [32, 32]
--policy proportional computes the split itself: drop --split, or use --policy static (or \
dynamic, which starts from --split)
[run] policy: "proportional" computes the split itself: drop split, or use policy = "static" \
(or dynamic, which starts from split)

global_batch = 64; split = [30, 30]
--split 30,30 sums to 60, but --global-batch is 64
[run] split: [30, 30] sums to 60, but global_batch is 64

lr = 0.1; min_lr = 0.2
--min-lr 0.2 is above --lr 0.1: the schedule goes from --lr down to --min-lr
[run] min_lr: 0.2 is above lr = 0.1: the schedule goes from lr down to min_lr

betas = [0.9]
--betas 0.9 must be two coefficients, each in [0, 1), like 0.9,0.999
[run] betas: [0.9] must be two coefficients, each in [0, 1), like [0.9, 0.999]

nesterov = true
--nesterov needs --momentum above 0 for SGD's Nesterov step (it is 0.0)
[run] nesterov: needs momentum above 0 for SGD's Nesterov step (it is 0.0)

steps = 10; eval_every = 20
--eval-every 20 is larger than the run's --steps 10: no evaluation would ever happen
[run] eval_every: 20 is larger than the run's steps = 10: no evaluation would ever happen

steps = 10; warmup_steps = 11
--warmup-steps 11 is larger than the run's --steps 10
[run] warmup_steps: 11 is larger than the run's steps = 10

eval_data = "held_out.txt"
--eval-data is the causal_lm task's held-out file (--task causal_lm); image tasks evaluate \
--eval-samples (or CIFAR's test batch), user tasks their own eval_data
[run] eval_data: is the causal_lm task's held-out file (task = "causal_lm"); image tasks \
evaluate eval_samples (or CIFAR's test batch), user tasks their own eval_data

round_exchange = 1.5
--round-exchange 1.5 must be below 1: it is the largest fraction of a round the exchange may \
take
[run] round_exchange: 1.5 must be below 1: it is the largest fraction of a round the exchange \
may take

outer_momentum = 1.0
--outer-momentum 1.0 must be in [0, 1)
[run] outer_momentum: 1.0 must be in [0, 1)

outer_lr = 1e300
--outer-lr 1e+300 must be at most 10: the outer step multiplies the islands' averaged change by \
it (0.7 is the default)
[run] outer_lr: 1e+300 must be at most 10: the outer step multiplies the islands' averaged \
change by it (0.7 is the default)

micro_batch = 4; exchange = "local"
--micro-batch is not supported with --exchange local yet: each island runs its share in one \
pass; leave --micro-batch out, or lower --global-batch
[run] micro_batch: is not supported with exchange = "local" yet: each island runs its share in \
one pass; leave micro_batch out, or lower global_batch

shard_state = "optimizer"; exchange = "local"
--shard-state is not supported with --exchange local: each island keeps a whole replica; use \
--shard-state replicate or --exchange exact
[run] shard_state: is not supported with exchange = "local": each island keeps a whole \
replica; use shard_state = "replicate" or exchange = "exact"
"""
"""Per relation: the ``[run]`` values (``;`` between keys), the trainer's message for the
same flags, cluster.toml's message."""
CASES = [block.splitlines() for block in RELATION_CASES.split("\n\n")]


@pytest.mark.parametrize(("toml", "flag_message", "key_message"), CASES)
def test_each_relation_is_one_message_on_both_sides(
    toml: str, flag_message: str, key_message: str,
) -> None:
    values = {k: tuple(v) if isinstance(v, list) else v
              for k, v in tomllib.loads(toml.replace("; ", "\n")).items()}
    with pytest.raises(UsageError) as info:  # the trainer's micro_batch: one per rank
        TrainConfig(**{k: (v,) if k == "micro_batch" else v for k, v in values.items()})
    assert str(info.value) == flag_message
    assert f"cluster.toml: {key_message}\n" in toml_problems(values) + "\n"


WORLD_CASES = [  # values, ranks, the trainer's message, cluster.toml's
    ({"global_batch": 8, "split": (4, 4)}, 1,
     "--split 4,4 has 2 shares but the run has 1 rank: give one share per rank, in rank order",
     "[run] split: [4, 4] has 2 shares but the run has 1 rank (a: 1): give one share per "
     "rank, in rank order"),
    ({"global_batch": 2}, 3,
     "--global-batch 2 is smaller than the 3 ranks: every rank needs at least one sample per "
     "step",
     "[run] global_batch: 2 is smaller than the 3 ranks (a: 3): every rank needs at least one "
     "sample per step"),
]


@pytest.mark.parametrize(("values", "ranks", "flag_message", "key_message"), WORLD_CASES)
def test_each_relation_with_the_world_size_is_one_message_on_both_sides(
    values: dict[str, Any], ranks: int, flag_message: str, key_message: str,
) -> None:
    config = TrainConfig(**values)
    with pytest.raises(UsageError) as info:
        check_world(config, ranks)
    assert str(info.value) == flag_message
    assert f"cluster.toml: {key_message}\n" in toml_problems(values, ranks) + "\n"
    check_world(config, len(values.get("split", ())) or 2)


def test_every_relation_has_a_case_above() -> None:
    keys = [case[-1] for case in CASES] + [case[-1] for case in WORLD_CASES]
    subjects = {key.split(":")[0].removeprefix("[run] ") for key in keys}
    assert subjects == {r.subject for r in relations.RELATIONS}


def test_a_key_with_its_own_problem_is_not_reported_again_by_a_relation() -> None:
    problems = toml_problems({"steps": 0, "eval_every": 20, "lr": 0, "min_lr": 0.2})
    assert "[run] steps: must be at least 1, got 0" in problems
    assert "[run] lr: must be greater than 0, got 0" in problems
    assert "eval_every" not in problems and "min_lr" not in problems
