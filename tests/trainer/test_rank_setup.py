"""What a script's rank is given before the script runs, in-process: a precision its device
can do in place of the script's, through the script's own ``TrainingArguments``, and the one
line naming the ranks of a stuck start."""

from __future__ import annotations

import pytest
import torch

from trainer.integrations.rank_setup import after_import, fit_precision, fitted_precision
from trainer.integrations.start_watch import BACKWARD, SILENT, holders, summary


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
    assert line == ("no first step within 60 s of the start ([run] hang_limit): rank 1 is in "
                    "train.py:9 in "
                    "<module>; ranks 0, 2 wait for it in broadcast (utils.py)")
    assert holders({0: "1broadcast (utils.py)", 1: "0train.py:9 in <module>"}) == [1]


def test_a_rank_that_gave_no_position_is_named_as_holding_the_others_up() -> None:
    """Its main thread holds the GIL, so its watch thread wrote nothing: the waiting ranks
    name it (and the follower blames it) rather than each other."""
    positions = {0: "1broadcast (utils.py)", 1: SILENT, 2: "1broadcast (utils.py)"}
    assert summary(positions, 60.0) == (
        "no first step within 60 s of the start ([run] hang_limit): rank 1 gave no position "
        "in 5 s (its main "
        "thread holds the GIL or it is frozen: its stack follows in its log); ranks 0, 2 wait "
        "for it in broadcast (utils.py)")
    assert holders(positions) == [1]
    assert holders({0: "1broadcast (utils.py)", 1: "1broadcast (utils.py)"}) == []


def test_ranks_in_the_backward_while_one_waits_elsewhere_are_an_uneven_epoch() -> None:
    """After step 5, ranks 0, 1 wait in DDP's gradient all-reduce for a step rank 2 (out of
    batches, in the barrier after its loop) does not take: the line says which, that it is
    an uneven epoch, and names DDP's join(); rank 2 is the one the others wait for."""
    positions = {0: f"1{BACKWARD}", 1: f"1{BACKWARD}", 2: "1barrier (distributed_c10d.py)"}
    line = summary(positions, 20.0, 5)
    assert line.startswith("no step within 20 s after step 5 ([run] hang_limit): ranks 0, 1 "
                           "wait in backward"), line
    assert "rank 2 is elsewhere, waiting in barrier (distributed_c10d.py)" in line
    assert "uneven epoch" in line and "join()" in line
    assert holders(positions) == [2]


def test_a_hang_after_steps_names_the_rank_elsewhere_and_the_setting() -> None:
    positions = {0: "1all_reduce (distributed_c10d.py)", 1: "0train.py:30 in evaluate"}
    line = summary(positions, 300.0, 12)
    assert line == ("no step within 300 s after step 12 ([run] hang_limit): rank 1 is in "
                    "train.py:30 in evaluate; rank 0 waits for it in all_reduce "
                    "(distributed_c10d.py)")
    assert holders(positions) == [1]
