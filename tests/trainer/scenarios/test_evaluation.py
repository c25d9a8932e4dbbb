"""Evaluation: eval events every N steps, with the same values whatever the split."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_runs import check, events, launch, of_kind

pytestmark = pytest.mark.slow

COMMON = ("--samples", "256", "--global-batch", "32", "--steps", "10", "--seed", "4",
          "--lr", "0.05", "--momentum", "0.9", "--eval-every", "4", "--eval-samples", "200")


def test_eval_events_every_n_steps_are_identical_whatever_the_split(tmp_path: Path) -> None:
    results = {}
    for split, extra in (("32", ()), ("20,12", ("--micro-batch", "7")), ("9,0,23", ())):
        run_dir = tmp_path / split.replace(",", "-")
        nproc = len(split.split(","))
        check(launch(nproc, *COMMON, "--split", split, *extra, "--run-dir", str(run_dir)))
        evals = of_kind(events(run_dir, 0), "eval")
        # Every 4 steps and after the last: steps 4, 8 and 10.
        assert [e["step"] for e in evals] == [4, 8, 10]
        assert all(e["samples"] == 200 and e["units"] == 200 for e in evals)
        for rank in range(1, nproc):
            assert not of_kind(events(run_dir, rank), "eval")  # rank 0 reports
        results[split] = [(e["loss"], e["accuracy"]) for e in evals]
        assert all(e["perplexity"] is None for e in evals)  # images: accuracy, not perplexity
    # The chunks' sums do not depend on the rank that computed them; what differs between the
    # runs is the parameters themselves, at float rounding (~1e-7, see the exactness tests).
    for split in ("20,12", "9,0,23"):
        for (loss, acc), (ref_loss, ref_acc) in zip(results[split], results["32"], strict=True):
            assert loss == pytest.approx(ref_loss, rel=1e-5) and acc == ref_acc
    losses = [loss for loss, _ in results["32"]]
    accuracies = [acc for _, acc in results["32"]]
    assert losses[-1] < losses[0] and accuracies[-1] > 0.2  # it learns the held-out classes
