"""``corral check`` (and ``--dry-run``) shows each rank's memory budget and the training state
it would hold, and fails a run whose state cannot fit, naming by how much
(remote/checks/memory_facts.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from remote.checks.memory_facts import (
    MEMORY_PROBE,
    MemoryProbe,
    memory_items,
    parse_memory_probe,
    rank_budgets,
)
from remote.config.cluster import ClusterConfig
from remote.config.read import parse_cluster
from remote.events import CheckReport
from trainer.step.state_fit import GIB

P = 1 * GIB
"""The model's trained parameters: 1 GiB."""


def cluster(tmp_path: Path, run: str = "", small: str = "", nproc: int = 1) -> ClusterConfig:
    hosts = "".join(f'[[hosts]]\nname = "{name}"\naddress = "local"\nnproc = {n}\ngpus = 0\n'
                    f"{extra}" for name, n, extra in (("small", nproc, small), ("mid", 1, ""),
                                                       ("big", 1, "")))
    text = (f'[cluster]\nname = "t"\nmaster = "small"\nrun_root = "{tmp_path}/runs"\n'
            f'{hosts}[run]\nsteps = 2\noptimizer = "adamw"\n{run}')
    return parse_cluster(text, path=tmp_path / "cluster.toml")


PROBES = {"small": MemoryProbe(available=3.0 * GIB), "mid": MemoryProbe(available=6.0 * GIB),
          "big": MemoryProbe(available=12.0 * GIB)}
"""Hosts with 3, 6 and 12 GiB available (1:2:4)."""


def items(config: ClusterConfig, probes: dict[str, MemoryProbe] = PROBES,
          parameter_bytes: int | None = P, nproc: int = 1) -> CheckReport:
    nprocs = {"small": nproc, "mid": 1, "big": 1}
    gpus: dict[str, int | None] = {"small": 0, "mid": 0, "big": 0}
    return CheckReport(items=tuple(memory_items(config, nprocs, gpus, probes, parameter_bytes)))


def test_the_probe_reads_available_memory_and_a_cgroup_limit_v1_or_v2() -> None:
    here = subprocess.run(["sh", "-c", MEMORY_PROBE], capture_output=True, text=True,
                          check=True, timeout=30).stdout
    assert (parse_memory_probe(here).available or 0) > 0
    capped = parse_memory_probe("available 8589934592\ncgroup 2147483648 1073741824\n")
    assert capped.available == 1 * GIB  # the cgroup's room, less than MemAvailable
    unlimited = parse_memory_probe("available 8589934592\ncgroup 9223372036854771712 5\n"
                                   "cgroup max 5\ngpu_free_mib 1024\ngpu_free_mib 512\n")
    assert unlimited.available == 8 * GIB and unlimited.gpu_free == (GIB, GIB / 2)
    assert parse_memory_probe("available x\n") == MemoryProbe()


def test_budgets_are_the_host_s_share_or_its_state_budget(tmp_path: Path) -> None:
    config = cluster(tmp_path, small="state_budget = 0.5\n", nproc=2)
    budgets = rank_budgets(config, {"small": 2, "mid": 1, "big": 1},
                           {"small": 0, "mid": 0, "big": 0}, PROBES)
    assert budgets == [("small", GIB / 2), ("small", GIB / 2), ("mid", 6 * GIB),
                       ("big", 12 * GIB)]
    shared = rank_budgets(cluster(tmp_path, nproc=2), {"small": 2, "mid": 1, "big": 1},
                          {"small": 0, "mid": 0, "big": 0}, PROBES)
    assert shared is not None and shared[:2] == [("small", 1.5 * GIB)] * 2
    assert rank_budgets(config, {"small": 2, "mid": 1, "big": 1},
                        {"small": 0, "mid": 0, "big": 0},
                        {"mid": PROBES["mid"], "big": PROBES["big"]}) is not None  # small's given
    assert rank_budgets(cluster(tmp_path), {"small": 1, "mid": 1, "big": 1},
                        {"small": 0, "mid": 0, "big": 0}, {}) is None


def test_a_replicated_run_that_cannot_fit_fails_the_check_naming_how_much_and_the_fix(
        tmp_path: Path) -> None:
    report = items(cluster(tmp_path))
    # AdamW, 1 GiB of parameters: 4 GiB per rank replicated; small has 3.
    assert not report.ok
    small = next(i for i in report.items if i.host == "small")
    assert not small.ok and small.detail == "rank 0: 4 GiB of 3 GiB"
    assert "1 GiB short" in small.hint and 'shard_state = "optimizer" fits' in small.hint
    assert all(i.ok for i in report.items if i.host != "small")


def test_sharded_the_same_run_fits_and_shows_each_rank_s_budget_and_state(
        tmp_path: Path) -> None:
    report = items(cluster(tmp_path, run='shard_state = "optimizer"\n'))
    assert report.ok
    assert [i.detail for i in report.items] == [
        "rank 0: 2.29 GiB of 3 GiB", "rank 1: 2.57 GiB of 6 GiB", "rank 2: 3.14 GiB of 12 GiB"]


def test_a_fitting_replicated_run_adds_no_row_and_unknown_facts_judge_nothing(
        tmp_path: Path) -> None:
    assert items(cluster(tmp_path), parameter_bytes=P // 2).items == ()
    assert items(cluster(tmp_path), parameter_bytes=None).items == ()
    sharded = cluster(tmp_path, run='shard_state = "gradients"\n')
    unknown = items(sharded, parameter_bytes=None)
    assert unknown.ok and "not judged: the model's size" in unknown.items[0].detail
    assert "each host's free memory" in items(sharded, probes={}).items[0].detail
    # The profiles measure the image model: another task's size is not known from them.
    lm = items(cluster(tmp_path, run='shard_state = "gradients"\ntask = "causal_lm"\n'))
    assert lm.ok and "not judged: the model's size" in lm.items[0].detail


def test_ranks_sharing_a_host_s_memory_are_named_in_the_fix(tmp_path: Path) -> None:
    report = items(cluster(tmp_path, run='shard_state = "gradients"\n', nproc=2),
                   parameter_bytes=2 * P, nproc=2)
    small = next(i for i in report.items if i.host == "small")
    # 1.5 GiB each on small: below the 2 GiB of parameters every rank holds.
    assert not small.ok and "fewer ranks on host 'small' (nproc)" in small.hint
