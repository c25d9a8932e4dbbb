"""Flags and validation: bad input is one clear line and exit code 2, before any collective."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from trainer_runs import REPO, rank_env, trainer_main

from profiles.user_errors import UsageError
from trainer.settings.syncbatch import check_syncbatch_passes
from trainer.settings.train_config import (
    SlowdownChange,
    TrainConfig,
    build_parser,
    check_world,
    parse_config,
)


def test_flags_fill_the_config() -> None:
    c = parse_config(["--model", "resnet18", "--global-batch", "48", "--split", "32,16",
                      "--policy", "dynamic", "--slowdown", "1,3", "--slowdown-at", "50:1:2",
                      "--slowdown-at", "80:0:1.5", "--max-batch", "40,-", "--steps", "7"])
    assert c.model == "resnet18" and c.split == (32, 16) and c.policy == "dynamic"
    assert c.slowdown == (1.0, 3.0) and c.max_batch == (40, None) and c.steps == 7
    assert c.slowdown_at == (SlowdownChange(step=50, rank=1, factor=2.0),
                             SlowdownChange(step=80, rank=0, factor=1.5))
    assert c.resolved_norm == "batch"
    assert TrainConfig().resolved_norm == "group"  # simple_cnn: exact whatever the split


def test_slowdown_comes_from_the_environment_when_the_flag_is_absent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORRAL_SLOWDOWN", "2.5")
    assert parse_config([]).slowdown == (2.5,)
    assert parse_config(["--slowdown", "1"]).slowdown == (1.0,)
    assert parse_config([]).slowdown_for(3) == 2.5


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"dataset": "cifar10"}, "--data-dir is required with --dataset cifar10"),
        ({"model": "vgg"}, "unknown --model 'vgg'"),
        ({"dataset": "imagenet"}, "unknown --dataset"),
        ({"steps": 3, "epochs": 1}, "either --steps or --epochs"),
        ({"slowdown": (0.5,)}, "--slowdown factors must be >= 1"),
        ({"policy": "proportional", "split": (32, 32)}, "computes the split itself"),
        ({"samples": 10, "global_batch": 64}, "smaller than --global-batch"),
        # SyncBatchNorm's collectives run inside each forward: unequal passes would hang.
        ({"model": "resnet18", "norm": "syncbatch", "micro_batch": (8,)},
         "--norm syncbatch needs one pass per rank and step .*: drop --micro-batch, "
         "or use --norm group"),
        ({"model": "resnet18", "norm": "syncbatch", "global_batch": 32, "split": (0, 32)},
         "--norm syncbatch needs every rank in every step, but --split 0,32 benches a rank"),
        ({"model": "resnet18", "norm": "syncbatch", "policy": "dynamic"},
         "--policy dynamic may bench one: use --policy static or proportional"),
    ],
)
def test_bad_settings_name_the_flag(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(UsageError, match=needle.replace("(", r"\(")):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "world", "needle"),
    [
        ({"global_batch": 32, "split": (16, 16)}, 3, "2 shares but the run has 3 ranks"),
        ({"global_batch": 32, "split": (20, 10)}, 2, "sums to 30"),
        ({"global_batch": 32, "split": (40, -8)}, 2, "negative"),
        ({"global_batch": 32, "micro_batch": (4, 4, 4)}, 2, "--micro-batch 4,4,4 has 3"),
        ({"global_batch": 32, "split": (24, 8), "max_batch": (16, None)}, 2,
         "rank 0's share 24 exceeds its --max-batch 16"),
        ({"global_batch": 2}, 3, "smaller than the 3 ranks"),
        ({"slowdown": (1.0, 2.0)}, 3, "give one"),
        ({"slowdown_at": (SlowdownChange(step=5, rank=4, factor=2.0),)}, 2, "names rank 4"),
        ({"max_batch": (8, 8), "global_batch": 32}, 2, "caps sum to 16"),
    ],
)
def test_world_size_checks(kwargs: dict[str, object], world: int, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        check_world(TrainConfig(**kwargs), world)  # type: ignore[arg-type]


def test_help_documents_every_flag() -> None:
    text = build_parser().format_help()
    for flag in ("--model", "--dataset", "--data-dir", "--samples", "--global-batch", "--split",
                 "--policy", "--rebalance-every", "--steps", "--epochs", "--lr", "--optimizer",
                 "--seed", "--run-dir", "--checkpoint-every", "--resume", "--slowdown",
                 "--slowdown-at", "--backend", "--threads", "--norm", "--max-batch"):
        assert flag in text
    for action in build_parser()._actions:
        assert action.help, action.option_strings


def _trainer(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer", *flags], cwd=REPO, env=rank_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--global-batch", "8", "--split", "3,4"], "--split 3,4 sums to 7"),
        (["--model", "vgg"], "invalid choice: 'vgg'"),
        (["--split", "a,b"], "comma-separated integers"),
    ],
)
def test_bad_flags_exit_2_with_one_message(flags: list[str], needle: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert trainer_main([*flags, "--run-dir", str(tmp_path)], monkeypatch) == 2
    assert needle in capsys.readouterr().err  # (a traceback would have failed the call)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"],
         "expected the python-version files data_batch_1"),
        (["--global-batch", "8", "--split", "8", "--max-batch", "6"],
         "--max-batch caps sum to 6, below --global-batch 8"),
        (["--norm", "syncbatch", "--device", "cpu"], "--norm syncbatch needs every rank on CUDA"),
    ],
)
def test_bad_input_the_rank_finds_exits_2_with_one_message(flags: list[str], needle: str,
                                                          tmp_path: Path) -> None:
    # Found once the rank knows its world and device: a real rank process, not this one.
    proc = _trainer(*flags, "--run-dir", str(tmp_path))
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_syncbatch_with_a_first_split_that_needs_micro_batches_or_benches_is_refused() -> None:
    check_syncbatch_passes("syncbatch", (None, None), (16, 16))  # equal passes: accepted
    check_syncbatch_passes("batch", (8, None), (0, 32))  # plain BatchNorm: no collective
    with pytest.raises(UsageError, match=r"needs micro-batches .* use --norm group"):
        check_syncbatch_passes("syncbatch", (8, None), (16, 16))
    with pytest.raises(UsageError, match="benches a rank"):
        check_syncbatch_passes("syncbatch", (None, None), (0, 32))
