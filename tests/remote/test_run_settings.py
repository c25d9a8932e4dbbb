"""A ``[run]`` key the trainer shares is one field (``trainer.settings.RunSettings``): its
cluster.toml key, its trainer flag and its launch flag all come from that field."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest

import remote.config.read
import remote.config.rules
import remote.run.launch
from remote.config.cluster import SECTIONS, ConfigError, HostSection, RunSection, parse_cluster
from remote.run.launch import LaunchPlan, trainer_flags
from remote.run.plan import HostPlan
from trainer import flags
from trainer.config import TrainConfig, parse_config
from trainer.settings import RunSettings, setting

CLUSTER = """\
[cluster]
name = "lab"

[[hosts]]
name = "a"
address = "local"
gpus = 0
"""
PLAN = LaunchPlan(run_id="r", run_dir="/tmp/r", code_digest="d", master_addr="127.0.0.1",
                  port=1, nnodes=1, backend="gloo")
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
"""
"""Every key ``[run]`` shares with the trainer, not at its default (``split``, ``epochs``:
below; ``split`` and ``proportional`` exclude each other, ``steps`` and ``epochs`` too)."""


def test_every_shared_run_key_arrives_at_the_trainer_as_written() -> None:
    run = parse_cluster(CLUSTER + EVERY_KEY_CHANGED, path=Path("cluster.toml")).run
    written = {f.name for f in fields(RunSettings)} - {"epochs", "split"}
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
