"""The proof: the split changes nothing but speed (gloo ranks on CPU, simple_cnn, synthetic)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from trainer_runs import check, events, final_params, launch, max_rel_diff, of_kind

pytestmark = pytest.mark.slow

COMMON = ("--model", "simple_cnn", "--dataset", "synthetic_image", "--samples", "512",
          "--global-batch", "32", "--steps", "20", "--seed", "3", "--lr", "0.05",
          "--momentum", "0.9")  # momentum: the optimizer's state must be exact too


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The run directory of COMMON with ``split``, each split run once for the module."""
    done: dict[str, Path] = {}

    def run(split: str) -> Path:
        if split not in done:
            run_dir = tmp_path_factory.mktemp("split-" + split.replace(",", "-"))
            check(launch(len(split.split(",")), *COMMON, "--split", split,
                         "--run-dir", str(run_dir)))
            done[split] = run_dir
        return done[split]

    return run


def test_any_split_gives_the_same_parameters_after_20_steps(runs: Callable[[str], Path]) -> None:
    params = {}
    for split in ("32", "20,12", "20,8,4", "4,8,20"):
        run_dir = runs(split)
        nproc = len(split.split(","))
        params[split] = final_params(run_dir)
        for rank in range(nproc):
            steps = of_kind(events(run_dir, rank), "step")
            assert [e["step"] for e in steps] == list(range(1, 21))  # same count on every rank
            assert {e["local_batch"] for e in steps} == {int(split.split(",")[rank])}
    reference = params.pop("32")
    for split, p in params.items():
        assert max_rel_diff(reference, p) <= 1e-4, split


def test_synthetic_data_is_learnable_and_events_describe_the_run(
    runs: Callable[[str], Path]
) -> None:
    run_dir = runs("20,12")
    rank0, rank1 = events(run_dir, 0), events(run_dir, 1)
    start = of_kind(rank0, "start")[0]
    assert (start["world_size"], start["backend"], start["device"]) == (2, "gloo", "cpu")
    assert start["split"] == [20, 12] and start["total_steps"] == 20
    assert (start["precision"], start["tf32"]) == ("fp32", False)  # fp32 means IEEE float32
    assert of_kind(rank0, "capacity")[0]["source"] == "split"
    steps0 = of_kind(rank0, "step")
    losses = [e["global_loss"] for e in steps0]
    # The loss falls: the last five steps average well below the first five.
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert all(e["step_s"] > 0 and e["compute_s"] > 0 for e in steps0)
    assert all(e["global_loss"] is None for e in of_kind(rank1, "step"))
    # Global loss is the sample-weighted mean of the ranks' local losses.
    s1 = of_kind(rank1, "step")
    for a, b in zip(steps0, s1, strict=True):
        assert a["global_loss"] == pytest.approx((20 * a["loss"] + 12 * b["loss"]) / 32, rel=1e-5)
    assert rank0[-1]["event"] == "end" and rank0[-1]["status"] == "completed"
    assert rank1[-1]["event"] == "end" and rank1[-1]["status"] == "completed"
    assert rank0[-1]["checkpoint"].endswith("step-00000020.pt")


def test_one_active_rank_beside_benched_ones_equals_one_process_buffers_included(
        tmp_path: Path) -> None:
    # BatchNorm with one rank active: its statistics are those of the whole batch, as in one
    # process. The active rank exchanges nothing (no gradient all-reduce, no buffer broadcast);
    # the benched ranks take parameters, buffers and state when rank 0 must write them.
    flags = (*COMMON, "--norm", "batch", "--steps", "8")
    alone, benched = tmp_path / "alone", tmp_path / "benched"
    check(launch(1, *flags, "--run-dir", str(alone)))
    check(launch(3, *flags, "--split", "0,32,0", "--run-dir", str(benched)))
    reference, result = final_params(alone), final_params(benched)
    assert any(name.endswith("running_mean") for name in result)
    assert max_rel_diff(reference, result) <= 1e-6
