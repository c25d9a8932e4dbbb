"""causal_lm evaluation: a held-out fraction or file, the same values whatever the split."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from lm_fixtures import TinyLM, lm_flags, make_tiny_lm
from trainer_runs import check, events, launch, of_kind

from profiles.user_errors import UsageError

pytestmark = pytest.mark.slow


def _evals(run_dir: Path) -> list[dict]:
    return of_kind(events(run_dir, 0), "eval")


def test_a_held_out_fraction_is_evaluated_identically_whatever_the_split(
        tmp_path: Path) -> None:
    lm: TinyLM = make_tiny_lm(tmp_path / "lm")
    flags = (*lm_flags(lm, extra=("eval_fraction=0.25",)), "--steps", "6",
             "--global-batch", "8", "--eval-every", "3")
    results = {}
    for split in ("8", "5,3"):
        run_dir = tmp_path / split.replace(",", "-")
        check(launch(len(split.split(",")), *flags, "--split", split, "--run-dir",
                     str(run_dir)))
        evals = _evals(run_dir)
        assert [e["step"] for e in evals] == [3, 6]
        for e in evals:  # language models: loss per target token and its perplexity
            assert e["units"] > 0 and e["accuracy"] is None
            assert e["perplexity"] == pytest.approx(math.exp(e["loss"]), rel=1e-6)
        results[split] = [e["loss"] for e in evals]
    assert results["5,3"] == pytest.approx(results["8"], rel=1e-5)


def test_an_eval_data_file_is_the_held_out_set(tmp_path: Path) -> None:
    lm: TinyLM = make_tiny_lm(tmp_path / "lm")
    run_dir = tmp_path / "run"
    # The prompt/completion pairs as held-out data: only completion tokens are counted.
    flags = (*lm_flags(lm), "--steps", "4", "--global-batch", "8", "--eval-every", "2",
             "--eval-data", str(lm.pairs))
    check(launch(2, *flags, "--split", "5,3", "--run-dir", str(run_dir)))
    evals = _evals(run_dir)
    assert [e["step"] for e in evals] == [2, 4]
    assert all(e["samples"] > 0 and math.isfinite(e["loss"]) for e in evals)


def test_a_fraction_that_leaves_nothing_to_train_or_evaluate_is_refused(
        tmp_path: Path) -> None:
    from trainer.tasks.causal_lm import build

    lm: TinyLM = make_tiny_lm(tmp_path / "lm")
    options = {"model": str(lm.model), "data": str(lm.corpus), "seq_len": 48}
    with pytest.raises(UsageError, match="eval_fraction must be in"):
        build({**options, "eval_fraction": 1.0})
    with pytest.raises(UsageError, match=r"leaves .* both need at least one"):
        build({**options, "eval_fraction": 0.001})
