"""The test tiers: which tests are slow, and the guard that keeps the fast tier fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tiers import (
    LONGEST_MODULES,
    TORCH_MATRIX_PATHS,
    heaviest_first,
    misplaced,
    slow_tier_command,
    tier_markers,
)


def test_sshd_and_netns_files_and_fixtures_and_gpu_tests_are_slow() -> None:
    assert tier_markers("test_config_cluster.py", ["tmp_path"], gpu=False) == []
    assert tier_markers("test_push_sshd.py", [], gpu=False) == ["sshd", "slow"]
    assert tier_markers("test_checks.py", ["sshd_cluster"], gpu=False) == ["sshd", "slow"]
    netns = {"netns", "sshd", "slow"}
    assert set(tier_markers("test_netns_fresh.py", [], gpu=False)) == netns
    assert set(tier_markers("test_x.py", ["box"], gpu=False)) == netns
    assert tier_markers("test_trainer_devices.py", [], gpu=True) == ["slow"]
    assert tier_markers("test_placement.py", [], gpu=False, serial=True) == ["slow"]
    # alone: serial too, so it is in no parallel run, and slow like every serial test
    assert tier_markers("test_results_demo.py", [], gpu=False, alone=True) == ["serial", "slow"]
    assert tier_markers("test_trainer_resume.py", [], gpu=False) == ["torch_matrix"]


@pytest.mark.parametrize(("args", "found"), [
    (["/venv/bin/python3", "-m", "torch.distributed.run", "--standalone", "-m", "trainer"],
     "torchrun"),
    (["sh", "-c", "cd '/a b'; X=1 PYTHONPATH=c '/venv/bin/python' -m torch.distributed.run "
                  "--nnodes 2 -m trainer; echo $? > exit"], "torchrun"),
    ([sys.executable, "/repo/tests/trainer/spawn_ranks.py", "2", "-m", "trainer"],
     "spawn_ranks.py"),
    ([sys.executable, "/repo/tests/trainer/warm_spawner.py", "transformers"], "warm_spawner.py"),
    (["/usr/sbin/sshd", "-D", "-e"], "sshd"),
    (["ip", "netns", "add", "n0"], "ip netns"),
    (["unshare", "-m", "sh"], "unshare"),
    # Not the slow tier: one rank process, a stand-in interpreter, another ip command.
    ([sys.executable, "-m", "trainer", "--split", "a,b"], None),
    (["sh", "-c", "'/tmp/odd/py thon' -m torch.distributed.run --nnodes 1"], None),
    (["ip", "-n", "n0", "link"], None),
])
def test_the_guard_knows_a_slow_tier_command(args: list[str], found: str | None) -> None:
    assert slow_tier_command(args) == found


def test_a_fast_test_that_starts_torchrun_fails_before_it_starts() -> None:
    with pytest.raises(pytest.fail.Exception, match="a fast-tier test started torchrun"):
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node=1", "-m", "trainer"], check=False)


def test_the_torch_matrix_paths_are_there() -> None:
    root = Path(__file__).resolve().parent.parent
    assert [p for p in TORCH_MATRIX_PATHS if not (root / p).exists()] == []


def test_the_modules_with_the_most_slow_tests_run_first_each_in_one_piece() -> None:
    modules = ["a", "a", "b", "b", "b", "c", "c"]
    slow = [False, True, True, True, False, True, False]
    order = heaviest_first(modules, slow)
    assert [modules[i] for i in order] == ["b", "b", "b", "a", "a", "c", "c"]
    assert order[:3] == [2, 3, 4]  # a module keeps its own order
    known = ["x/test_a.py", "y/test_quickstart.py", "z/test_lowcomm.py", "y/test_quickstart.py"]
    assert [known[i] for i in heaviest_first(known, [True, False, False, False])] == [
        "y/test_quickstart.py", "y/test_quickstart.py", "z/test_lowcomm.py", "x/test_a.py"]


def test_the_longest_modules_named_are_test_files() -> None:
    names = {p.name for p in (Path(__file__).resolve().parent).rglob("test_*.py")}
    assert [m for m in LONGEST_MODULES if m not in names] == []


def test_the_tier_is_the_folder() -> None:
    assert tier_markers("tests/trainer/scenarios/test_x_runs.py", [], gpu=False) == ["slow"]
    assert tier_markers("tests/trainer/test_x.py", [], gpu=False) == []
    tests = [("tests/remote/test_a.py::t", "tests/remote/test_a.py", True),
             ("tests/remote/test_a.py::u", "tests/remote/test_a.py", False),
             ("tests/remote/scenarios/test_b.py::t", "tests/remote/scenarios/test_b.py", True)]
    assert misplaced(tests) == ["tests/remote/test_a.py::t"]
