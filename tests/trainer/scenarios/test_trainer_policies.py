"""Balancing in the loop: capacities at start, rebalances applied on every rank at once."""

from __future__ import annotations

import socket
import statistics
from pathlib import Path

import pytest
import torch
from trainer_runs import check, events, launch, launch_cmd, of_kind, rank_env, run_launcher

from profiles.host import cpu_model
from profiles.profile import Profile, utc_now_iso
from profiles.store import save_profile

pytestmark = pytest.mark.slow

COMMON = ("--samples", "1024", "--global-batch", "64", "--threads", "1")


@pytest.mark.serial  # the split follows the speeds a warm-up measured (tests/tiers.py)
def test_proportional_split_follows_warmup_capacity(tmp_path: Path) -> None:
    check(launch(2, *COMMON, "--policy", "proportional", "--slowdown", "1,4", "--steps", "6",
                 "--run-dir", str(tmp_path)))
    capacity = of_kind(events(tmp_path, 0), "capacity")[0]
    assert capacity["source"] == "warmup"
    fast, slow = capacity["samples_per_s"]
    assert fast > 2 * slow  # rank 1 emulates a device four times slower
    split = of_kind(events(tmp_path, 0), "start")[0]["split"]
    assert sum(split) == 64 and split[0] > 2 * split[1]
    assert not of_kind(events(tmp_path, 0), "rebalance")  # proportional decides once
    assert {e["local_batch"] for e in of_kind(events(tmp_path, 1), "step")} == {split[1]}


@pytest.mark.serial  # the moves follow measured speeds (tests/tiers.py)
def test_dynamic_moves_samples_to_the_fast_rank_on_every_rank_at_once(tmp_path: Path) -> None:
    check(launch(2, *COMMON, "--policy", "dynamic", "--split", "16,48", "--slowdown", "1,3",
                 "--rebalance-every", "5", "--steps", "30", "--run-dir", str(tmp_path)))
    r0, r1 = events(tmp_path, 0), events(tmp_path, 1)
    capacity = of_kind(r0, "capacity")[0]
    assert capacity["source"] == "split"
    # No profile: each device's solo figure is a probe, one rank at a time.
    assert capacity["solo_source"] == ["probe", "probe"]
    fast, slow = capacity["solo_samples_per_s"]
    assert fast > 1.5 * slow  # rank 1 emulates a device three times slower
    rebalances = of_kind(r0, "rebalance")
    assert rebalances and rebalances[0]["step"] == 6 and rebalances[0]["previous"] == [16, 48]
    assert rebalances[0]["split"][0] > 16
    # Both ranks switch at the same step, and every step still uses exactly 64 samples.
    expected = {1: [16, 48]}
    for r in rebalances:
        expected[r["step"]] = r["split"]
    current = expected[1]
    for a, b in zip(of_kind(r0, "step"), of_kind(r1, "step"), strict=True):
        current = expected.get(a["step"], current)
        assert [a["local_batch"], b["local_batch"]] == current
    assert of_kind(r0, "step")[-1]["local_batch"] > 32


def test_a_profile_memory_cap_sets_the_micro_batch_not_the_share(tmp_path: Path) -> None:
    # Not serial: the capacities, the split and the passes are the stored profiles', whatever
    # speeds the machine gives the ranks.
    # Rank 0 is three times faster, but its profile says only 8 samples fit in memory: far
    # below its speed-fair share of 48 (3:1 of 64). It gets the 48 anyway, in passes of 8.
    for slowdown, per_sample in ((1.0, 0.001), (3.0, 0.003)):
        save_profile(Profile(
            host=socket.gethostname(), device="cpu", device_name=cpu_model() or "unknown CPU",
            model="simple_cnn", torch_version=torch.__version__, threads=1, slowdown=slowdown,
            created=utc_now_iso(), batches=(8, 32), step_s=(8 * per_sample, 32 * per_sample),
            a=0.0, c=per_sample, max_batch=8 if slowdown == 1.0 else None,
        ), root=tmp_path / "profiles")
    env = {**rank_env(), "CORRAL_PROFILE_DIR": str(tmp_path / "profiles")}
    proc = run_launcher(
        launch_cmd(2, *COMMON, "--policy", "proportional", "--slowdown", "1,3",
                   "--samples", "150", "--epochs", "1", "--run-dir", str(tmp_path / "run"),
                   agent=False),
        env=env, timeout=240)
    check(proc)
    rank0 = events(tmp_path / "run", 0)
    capacity = of_kind(rank0, "capacity")[0]
    assert capacity["source"] == "profile"
    assert capacity["samples_per_s"] == pytest.approx([1000.0, 1000.0 / 3])
    assert capacity["max_batch"] == [None, None] and capacity["micro_batch"] == [8, None]
    # Each device alone, for the run's baselines: from the same profiles, at its micro-batch
    # (rank 0's 8; rank 1 has none: the global batch), nothing measured.
    assert capacity["solo_source"] == ["profile", "profile"]
    assert capacity["solo_batch"] == [8, 64]
    assert capacity["solo_samples_per_s"] == pytest.approx([1000.0, 1000.0 / 3])
    start = of_kind(rank0, "start")[0]
    assert start["split"] == [48, 16] and start["micro_batch"] == 8
    assert {e["passes"] for e in of_kind(rank0, "step")} == {6}
    assert {e["passes"] for e in of_kind(events(tmp_path / "run", 1), "step")} == {1}
    # --epochs 1 of 150 samples at B=64: two full steps (the partial batch is dropped).
    assert start["total_steps"] == 2 and start["steps_per_epoch"] == 2
    assert len(of_kind(events(tmp_path / "run", 1), "step")) == 2


@pytest.mark.serial  # judged by measured step times (tests/tiers.py)
def test_slowdown_changes_at_the_scheduled_step(tmp_path: Path) -> None:
    check(launch(2, *COMMON, "--slowdown-at", "9:1:4", "--steps", "16",
                 "--resources-every", "0.1", "--run-dir", str(tmp_path)))
    resources = of_kind(events(tmp_path, 1), "resources")
    assert resources and all(r["rss_bytes"] > 0 for r in resources)
    # Rank 1's compute time relative to rank 0's in the same step (same batch, same moment,
    # so machine noise cancels): about 1 before step 9, and about 4 times that from step 9 on.
    # Judged against the run's own ratio before the change: with other work beside the test,
    # one rank's own time per step can run a steady 1.5 times the other's for a whole run
    # (0.66 before and 2.78 after, where the two ranks alone give 1.00 and 4.01).
    ratios = [b["compute_s"] / a["compute_s"] for a, b in
              zip(of_kind(events(tmp_path, 0), "step"), of_kind(events(tmp_path, 1), "step"),
                  strict=True)]
    before, after = statistics.median(ratios[1:8]), statistics.median(ratios[8:])
    assert before < 2.0 and after / before > 2.5, (before, after)
