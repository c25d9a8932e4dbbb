"""The trainer's flags come from its config's fields: the parser, the launch flags, the help
and the checks of a field are all generated from the one dataclass field."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import pytest

from profiles.user_errors import UsageError
from trainer.settings import flags
from trainer.settings.run_settings import setting
from trainer.settings.train_config import SlowdownChange, TrainConfig, build_parser, parse_config

REPO = Path(__file__).resolve().parents[2]

EVERY_FIELD_CHANGED = {
    "task": "causal_lm", "model": "resnet18", "dataset": "cifar100", "data_dir": "/data/c",
    "samples": 100, "global_batch": 48, "split": (32, 16), "policy": "dynamic",
    "rebalance_every": 7, "steps": 40, "lr": 0.125, "optimizer": "adamw", "seed": 9,
    "momentum": 0.5, "nesterov": True, "betas": (0.8, 0.99), "eps": 1e-6,
    "checkpoint_every": 4, "backend": "gloo", "precision": "bf16", "lr_schedule": "cosine",
    "warmup_steps": 3, "min_lr": 0.01, "clip_grad": 2.5, "eval_every": 5, "eval_samples": 64,
    "eval_data": "held.txt", "task_options": (("lora_r", "16"), ("text", "a=b c")),
    "norm": "batch", "rebalance_threshold": 0.1, "max_batch": (40, None),
    "capacity_passes": 2, "weight_decay": 0.001, "run_dir": "/tmp/run dir",
    "keep_checkpoints": 0, "resume": True, "device": "cpu", "threads": 2,
    "pin_cores": False, "prefetch": "on", "cores": "0-3,8", "slowdown": (1.0, 2.5),
    "slowdown_at": (SlowdownChange(step=5, rank=1, factor=3.0),
                    SlowdownChange(step=9, rank=0, factor=1.5)),
    "resources_every": 0.5, "micro_batch": (None, None), "exchange": "local", "round_steps": 12,
    "round_exchange": 0.1, "outer_lr": 0.5, "outer_momentum": 0.8, "islands": (0, 1),
    "island_schedule": "0:0;4:0,~1",
    "outer_compression": "int4", "outer_overlap": True,
    "link_mbit": 72.5, "state_budget": (1.5, 6.0),
}
"""A value other than the default for every field (``epochs``: below, it excludes ``steps``)."""


def test_every_field_round_trips_through_its_launch_flags(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_SLOWDOWN", raising=False)
    defaults = TrainConfig()
    # epochs excludes steps, shard_state exchange = "local": each round-trips below.
    changed = {f.name for f in fields(TrainConfig)} - {"epochs", "shard_state"}
    assert set(EVERY_FIELD_CHANGED) == changed, "give the new field a value here"
    config = TrainConfig(**EVERY_FIELD_CHANGED)  # type: ignore[arg-type]
    assert all(getattr(config, n) != getattr(defaults, n) for n in changed)
    assert parse_config(flags.config_flags(config)) == config
    by_epochs = replace(defaults, epochs=3, resume=True)
    assert parse_config(flags.config_flags(by_epochs)) == by_epochs
    sharded = replace(defaults, shard_state="gradients")
    assert parse_config(flags.config_flags(sharded)) == sharded
    assert parse_config(flags.config_flags(defaults)) == defaults
    dashed = replace(defaults, data_dir="-data", run_dir="--run", micro_batch=(None,))
    assert parse_config(flags.config_flags(dashed)) == dashed  # values that look like flags
    micro = replace(defaults, micro_batch=(8, None))  # not with the local exchange (above)
    assert parse_config(flags.config_flags(micro)) == micro


@pytest.mark.parametrize(("words", "expected"), [
    (["--exchange", "local", "--outer-lr", "1e300"], "--outer-lr 1e+300 must be at most 10"),
    (["--exchange", "local", "--micro-batch", "4"],
     "--micro-batch is not supported with --exchange local yet"),
    (["--exchange", "local", "--micro-batch=-,4"], "--micro-batch is not supported"),
])
def test_local_exchange_settings_are_refused_before_any_rank_starts(
        words: list[str], expected: str) -> None:
    """Issue 59: these passed every check and failed in the ranks after launch."""
    with pytest.raises(UsageError, match=expected.replace("+", r"\+")):
        parse_config(words)
    assert parse_config(["--exchange", "local", "--micro-batch=-"]).micro_batch == (None,)


@dataclass(frozen=True, kw_only=True)
class WithKnob(TrainConfig):
    """A config with one setting more, added the way any new setting is."""

    knob_level: int = field(default=3, metadata=setting("extras", at_least=1))
    """How far the knob is turned."""
    knob_mode: Literal["soft", "hard"] = field(default="soft", metadata=setting("extras"))
    """How the knob acts."""


def test_a_new_field_is_a_flag_and_a_launch_flag_without_further_code() -> None:
    parser = flags.build_parser(WithKnob, prog="t", description="d")
    text = parser.format_help()
    assert "--knob-level KNOB_LEVEL" in text and "How far the knob is turned." in text
    assert "--knob-mode {soft,hard}" in text and "extras:" in text
    config = WithKnob(knob_level=5, knob_mode="hard", steps=2)
    words = flags.config_flags(config)
    assert words[words.index("--knob-level") + 1] == "5"
    assert words[words.index("--knob-mode") + 1] == "hard"
    parsed = flags.parsed_values(WithKnob, parser.parse_args(words))
    assert WithKnob(**parsed) == config
    with pytest.raises(UsageError, match="--knob-level must be >= 1, got 0"):
        WithKnob(knob_level=0)
    with pytest.raises(UsageError, match="unknown --knob-mode 'loud'; choose one of soft, hard"):
        WithKnob(knob_mode="loud")  # type: ignore[arg-type]


def test_help_is_each_fields_docstring_with_its_default() -> None:
    _, docs = flags.field_docs(TrainConfig)
    text = "".join(build_parser().format_help().split())  # argparse wraps at spaces and "-"
    for f in fields(TrainConfig):
        assert "".join(docs[f.name].replace("``", "").split()) in text, f.name
    assert "(default:50)" in text  # checkpoint_every, the one default [run] has too


def test_docs_trainer_md_lists_every_flag() -> None:
    doc = (REPO / "docs" / "trainer.md").read_text(encoding="utf-8")
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert f"`{option}" in doc, option
