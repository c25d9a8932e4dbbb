"""What a script's rank is given before the script runs, in-process: a precision its device
can do in place of the script's, through the script's own ``TrainingArguments``, and the one
line naming the ranks of a stuck start."""

from __future__ import annotations

import pytest
import torch

from trainer.integrations.rank_setup import after_import, fit_precision, fitted_precision
from trainer.integrations.start_watch import SILENT, holders, summary


def test_a_cpu_rank_computes_a_scripts_bf16_or_fp16_in_fp32() -> None:
    cpu = torch.device("cpu")
    assert [fitted_precision(p, cpu) for p in ("bf16", "fp16", "fp32")] == ["fp32"] * 3


def test_training_arguments_asking_bf16_on_a_cpu_rank_become_fp32_not_an_error() -> None:
    transformers = pytest.importorskip("transformers")
    import transformers.training_args as module

    original = module.TrainingArguments.__post_init__
    try:
        fit_precision(module, torch.device("cpu"))
        args = transformers.TrainingArguments(output_dir="/tmp/unused", bf16=True,
                                              report_to="none")
    finally:
        module.TrainingArguments.__post_init__ = original
    assert (args.bf16, args.fp16, args.use_cpu) == (False, False, True)


def test_a_hook_after_import_runs_once_the_module_is_imported() -> None:
    seen: list[str] = []
    after_import("json", lambda module: seen.append(module.__name__))  # already imported
    assert seen == ["json"]


def test_the_stuck_start_line_names_the_rank_the_others_wait_for() -> None:
    line = summary({0: "1broadcast (utils.py)", 1: "0train.py:9 in <module>",
                    2: "1broadcast (utils.py)"}, 60.0)
    assert line == ("no first step within 60 s of the start: rank 1 is in train.py:9 in "
                    "<module>; ranks 0, 2 wait for it in broadcast (utils.py)")
    assert holders({0: "1broadcast (utils.py)", 1: "0train.py:9 in <module>"}) == [1]


def test_a_rank_that_gave_no_position_is_named_as_holding_the_others_up() -> None:
    """Its main thread holds the GIL, so its watch thread wrote nothing: the waiting ranks
    name it (and the follower blames it) rather than each other."""
    positions = {0: "1broadcast (utils.py)", 1: SILENT, 2: "1broadcast (utils.py)"}
    assert summary(positions, 60.0) == (
        "no first step within 60 s of the start: rank 1 gave no position in 5 s (its main "
        "thread holds the GIL or it is frozen: its stack follows in its log); ranks 0, 2 wait "
        "for it in broadcast (utils.py)")
    assert holders(positions) == [1]
    assert holders({0: "1broadcast (utils.py)", 1: "1broadcast (utils.py)"}) == []
