"""``--exchange local`` (approximate): real gloo ranks on CPU, simple_cnn.

What a user relies on: the same seed gives the same result; a split inside an island changes
nothing (the island is exact); islands are weighted by the samples they trained on; a run that
died mid-round resumes to the uninterrupted run's parameters; a run that lost a host goes on
with fewer islands."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainer_runs import (
    REPO,
    SPAWN_RANKS,
    check,
    cut_back_to,
    events,
    final_params,
    launch,
    launch_cmd,
    max_rel_diff,
    of_kind,
    rank_env,
    run_launcher,
)

from trainer.lowcomm.plan import plan_round

pytestmark = pytest.mark.slow

LOCAL = ("--exchange", "local", "--samples", "512", "--global-batch", "32", "--seed", "3",
         "--optimizer", "adamw", "--lr", "0.003", "--round-steps", "4")

TWO_ISLANDS = (*LOCAL, "--islands", "0,1,1", "--steps", "24", "--checkpoint-every", "8")
"""Islands 0 | 1 2 for three rounds, a checkpoint at each round's end (step 8, 16, 24)."""


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``TWO_ISLANDS`` straight through, launched once for the module: the same-seed test's
    first run, the uninterrupted run a death mid-round and a cut-back copy resume to (tests
    only read it; the copy is cut in the test's own directory)."""
    run_dir = tmp_path_factory.mktemp("lowcomm") / "straight"
    check(launch(3, *TWO_ISLANDS, "--run-dir", str(run_dir)))
    return run_dir


def test_same_seed_same_result_and_the_round_is_reported(straight: Path, tmp_path: Path
                                                         ) -> None:
    proc = launch(3, *TWO_ISLANDS, "--run-dir", str(tmp_path / "again"))
    check(proc)
    runs = [straight, tmp_path / "again"]
    assert "APPROXIMATE run (--exchange local)" in proc.stdout
    assert max_rel_diff(final_params(runs[0]), final_params(runs[1])) == 0.0
    rounds = of_kind(events(runs[0], 0), "round")
    # An equal split: island [1, 2] has twice island [0]'s ranks, so twice its inner steps.
    assert [r["inner_steps"] for r in rounds] == [[3, 5]] * 3
    assert rounds[-1]["step"] == 24 and rounds[-1]["islands"] == [[0], [1, 2]]
    # Each round sends ~1x the float32 parameters per leader, against 8 all-reduces exact.
    assert 0 < rounds[0]["bytes_per_sample"] == rounds[0]["exchanged_bytes"] / (8 * 32)
    start = of_kind(events(runs[0], 0), "start")[0]
    assert start["exact"] is False and "approximate" in start["exact_note"]


def test_a_split_inside_an_island_changes_nothing(tmp_path: Path) -> None:
    # Island 1 is one rank, or two ranks sharing its batches 16/16 or 8/24: the same worker.
    runs = {"one": (2, "0,1", "32,32"), "even": (3, "0,1,1", "32,16,16"),
            "uneven": (3, "0,1,1", "32,8,24")}
    sgd = ("--optimizer", "sgd", "--lr", "0.05")  # AdamW's first steps amplify float rounding
    # float32 changes: a quantised exchange rounds a float difference of 1e-7 to a whole code
    # now and then (2e-4 seen with int8), so the island's exactness is judged without it.
    sgd = (*sgd, "--outer-compression", "none")
    for name, (ranks, islands, split) in runs.items():
        check(launch(ranks, *LOCAL, *sgd, "--global-batch", "64", "--islands", islands, "--split",
                     split, "--steps", "16", "--run-dir", str(tmp_path / name)))
    one = final_params(tmp_path / "one")
    assert max_rel_diff(one, final_params(tmp_path / "even")) <= 1e-5
    assert max_rel_diff(one, final_params(tmp_path / "uneven")) <= 1e-5


def test_the_outer_step_weights_islands_by_their_samples(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(SPAWN_RANKS), "3",
           str(SPAWN_RANKS.with_name("lowcomm_outer_check.py")), str(out)]
    # From the warm spawner; past the limit its ranks are killed with it (run_launcher).
    proc = run_launcher(cmd, env=rank_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["values"] == [[3.0] * 4] * 3  # (1·32 + 4·64) / 96 on every rank
    assert result["bytes"] == 4 * 4  # 2(n-1)/n of 4 float32 for 2 islands


# alone: the inner steps follow measured speeds, and each island's rank is pinned to its core
# (tests/tiers.py)
@pytest.mark.alone
def test_a_twice_as_fast_island_trains_twice_the_samples(tmp_path: Path) -> None:
    # Dynamic: the inner steps follow the measured speeds (rank 1 emulates a 2x slower device).
    # Started as a process of its own, not from the warm spawner: from it, in the serial phase
    # of two clean-clone runs, the emulated 2x measured 1.37-1.46 (docs/benchmarks/ci-time.md "One
    # warm
    # spawner per test worker, and the suite after it (issue 39)").
    # Eight rounds of 12 inner steps: the median below is judged over eight rounds, so two
    # rounds disturbed on a shared machine do not decide it (a clean-clone run's had five, two
    # of them at 0.98 and 1.06).
    steps = 96
    check(launch(2, *LOCAL, "--islands", "0,1", "--policy", "dynamic", "--slowdown", "1,2",
                 "--round-steps", "6", "--steps", str(steps), "--run-dir", str(tmp_path),
                 warm=False))
    rounds = of_kind(events(tmp_path, 0), "round")
    assert len(rounds) == steps // 12
    # Each round shares its steps by the speeds the round before measured, exactly...
    for before, after in itertools.pairwise(rounds):
        speeds = [n / s for n, s in zip(before["inner_steps"], before["inner_s"], strict=True)]
        planned = plan_round(before["step"], steps, 6, speeds)
        assert list(planned.steps) == after["inner_steps"], (before, after)
    # ...and the measured speeds are the emulated 2x (a median over rounds: the machine is
    # shared, one round's times are noisy). Judged on the speeds themselves: the steps they
    # share out are whole, so a speed ratio of 1.7 already gives 7:5 where 1.8 gives 8:4. The
    # emulation doubles rank 1's own time on its own core, and a run's two cores are not always
    # equal: four runs alone on the quiet 2-core VM measured medians of 1.70, 2.30, 3.01 and
    # 2.16, each steady over its rounds (docs/benchmarks/ci-time.md "The suite on a faster day").
    fast, slow = rounds[-1]["inner_steps"]
    ratios = [(n0 / s0) / (n1 / s1) for (n0, n1), (s0, s1)
              in ((r["inner_steps"], r["inner_s"]) for r in rounds)]
    assert 1.5 <= statistics.median(ratios) <= 3.5, rounds
    samples = [sum(e["local_batch"] for e in of_kind(events(tmp_path, r), "step")[-1:])
               for r in (0, 1)]
    assert samples == [fast * 32, slow * 32]


def test_resume_after_a_death_mid_round_equals_the_uninterrupted_run(straight: Path,
                                                                    tmp_path: Path) -> None:
    died, flags = tmp_path / "died", TWO_ISLANDS
    # The same run killed mid-round after its step-8 checkpoint (slowed so it is caught there,
    # two rounds before its end).
    proc = subprocess.Popen(launch_cmd(3, *flags, "--slowdown", "4", "--run-dir", str(died)),
                            cwd=REPO, env=rank_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_for(lambda: (died / "checkpoints" / "step-00000008.pt").is_file(), proc)
        victim = of_kind(events(died, 2), "start")[0]["pid"]
        os.kill(victim, signal.SIGKILL)  # island [1, 2] loses a rank mid-round
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    newest = sorted((died / "checkpoints").glob("step-*.pt"))[-1].name
    assert newest == "step-00000008.pt"
    check(launch(3, *flags, "--resume", "--run-dir", str(died)))
    assert [s["step"] for s in of_kind(events(died, 0), "start")][-1] == 8
    assert max_rel_diff(final_params(straight), final_params(died)) <= 1e-6


def test_a_run_that_lost_a_host_goes_on_with_fewer_islands(tmp_path: Path) -> None:
    # on_host_loss = "continue" on the restart path (`live_membership = false`, `outer_overlap`;
    # live islands: test_lowcomm_membership.py): the run restarts on the hosts left, from the
    # last round-end checkpoint of three islands, as two; the same resume twice gives the same
    # result.
    flags = (*LOCAL, "--steps", "24", "--checkpoint-every", "8")
    first = tmp_path / "first"
    check(launch(3, *flags, "--islands", "0,1,2", "--run-dir", str(first)))
    saved = sorted((first / "checkpoints").glob("step-*.pt"))
    kept = int(saved[0].stem.removeprefix("step-"))  # a round's end: 12 (3 islands x 4 steps)
    for later in saved[1:]:  # as if a host died after the first round-end checkpoint
        for path in (first / "checkpoints").glob(f"{later.name}*"):
            path.unlink()
    shutil.rmtree(first / "final")
    again = tmp_path / "again"
    shutil.copytree(first, again)
    for run_dir in (first, again):
        proc = launch(2, *flags, "--islands", "0,1", "--resume", "--run-dir", str(run_dir))
        check(proc)
        assert "the islands changed since the checkpoint (0 | 1 | 2 -> 0 | 1)" in proc.stdout
        assert [s["step"] for s in of_kind(events(run_dir, 0), "start")][-1] == kept
        rounds = of_kind(events(run_dir, 0), "round")
        assert rounds[-1]["step"] == 24 and rounds[-1]["islands"] == [[0], [1]]
    assert max_rel_diff(final_params(first), final_params(again)) == 0.0


def _wait_for(condition, proc: subprocess.Popen[str], limit: float = 180) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not condition():
        assert proc.poll() is None, "the run ended before the condition held"
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.1)


def test_resume_from_a_round_end_checkpoint_continues_exactly(straight: Path,
                                                             tmp_path: Path) -> None:
    # A copy of the module's straight run (the same seed gives the same run: the first test
    # here), cut back to its step-8 checkpoint, the first round's end, as if it had died after
    # step 8: only the resume is launched, the uninterrupted run is the fixture's.
    cut = tmp_path / "cut"
    shutil.copytree(straight, cut)
    cut_back_to(cut, 8)
    check(launch(3, *TWO_ISLANDS, "--resume", "--run-dir", str(cut)))
    assert [s["step"] for s in of_kind(events(cut, 0), "start")][-1] == 8
    assert max_rel_diff(final_params(straight), final_params(cut)) <= 1e-6


def test_compressed_overlapped_rounds_are_deterministic_and_resume_exactly(straight: Path,
                                                                           tmp_path: Path
                                                                           ) -> None:
    # int4 with error feedback and the exchange overlapped (eager starts): the checkpoint at step
    # 8 holds the exchange still under way, the anchor, and every island's start and residual.
    flags = (*TWO_ISLANDS, "--outer-compression", "int4", "--outer-overlap")
    first, second = tmp_path / "first", tmp_path / "second"
    for run_dir in (first, second):
        check(launch(3, *flags, "--run-dir", str(run_dir)))
    assert max_rel_diff(final_params(first), final_params(second)) == 0.0
    # Another training than the default exchange's (the delayed update, the int4 payload).
    assert max_rel_diff(final_params(first), final_params(straight)) > 1e-3
    rounds = of_kind(events(first, 0), "round")
    assert [(r["compression"], r["overlap"]) for r in rounds] == [("int4", True)] * 3
    # One 4-bit code per value and a float32 step per 256, against the default int8's byte.
    int8 = of_kind(events(straight, 0), "round")[0]
    assert int8["compression"] == "int8" and not int8["overlap"]
    assert 1.9 < int8["exchanged_bytes"] / rounds[0]["exchanged_bytes"] < 2.0
    # Cut back to the step-8 checkpoint (as if it had died mid-round after it) and resumed.
    cut_back_to(second, 8)
    check(launch(3, *flags, "--resume", "--run-dir", str(second)))
    assert [s["step"] for s in of_kind(events(second, 0), "start")][-1] == 8
    assert max_rel_diff(final_params(first), final_params(second)) == 0.0
