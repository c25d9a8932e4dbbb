"""The runs (slow tier) of what ``tests/trainer/test_placement.py`` tests: cPU placement: disjoint
cores per rank, cores near a GPU, and the allocator switch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.trainer.trainer_runs import (
    check,
    events,
    launch_cmd,
    of_kind,
    rank_env,
    run_launcher,
)
from trainer.placement import (
    allocator_env,
    choose_allocator,
    find_allocators,
    parse_cpulist,
)


def _start_events(tmp_path: Path, name: str, nproc: int, env: dict[str, str],
                  *flags: str) -> list[dict[str, object]]:
    run_dir = tmp_path / name
    cmd = launch_cmd(nproc, "--steps", "1", "--global-batch", "8", "--samples", "64",
                     "--run-dir", str(run_dir), *flags)
    cmd.remove("--threads")
    cmd.remove("1")  # threads follow the cores, as in a run with no threads set
    proc = run_launcher(cmd, env={**rank_env(), **env}, timeout=240)
    check(proc)
    return [of_kind(events(run_dir, r), "start")[0] for r in range(nproc)]


@pytest.mark.slow
def test_ranks_on_one_host_run_on_disjoint_cores_with_a_thread_each(tmp_path: Path) -> None:
    allowed = frozenset(os.sched_getaffinity(0))
    ranks = 2
    starts = _start_events(tmp_path, "pinned", ranks, {})
    cores = [parse_cpulist(str(s["cores"])) for s in starts]
    if len(allowed) < ranks:  # a one-core machine: nothing to pin
        assert all("not pinned" in str(s["placement"]) for s in starts)
        return
    assert cores[0].isdisjoint(cores[1]) and cores[0] | cores[1] == allowed
    assert [s["threads"] for s in starts] == [len(c) for c in cores]
    # Switched off, every rank keeps the cores it was given.
    starts = _start_events(tmp_path, "unpinned", ranks, {}, "--no-pin-cores")
    assert all(parse_cpulist(str(s["cores"])) == allowed for s in starts)
    assert all(s["placement"] == "not pinned (pin_cores off)" for s in starts)


@pytest.mark.slow
def test_the_allocator_switch_works_both_ways_in_a_real_rank(tmp_path: Path) -> None:
    found = find_allocators()
    best = choose_allocator("auto", found)
    on = _start_events(tmp_path, "on", 1, allocator_env(best, found))[0]["allocator"]
    off = _start_events(tmp_path, "off", 1, allocator_env("off", found))[0]["allocator"]
    bare = _start_events(tmp_path, "bare", 1, {})[0]["allocator"]
    assert off == 'glibc defaults (allocator = "off")'
    assert on == ("glibc tuned" if best == "glibc" else best)
    # Started without corral's launcher environment, a rank tunes glibc itself.
    assert bare in ("glibc tuned (mallopt)", *found)


@pytest.mark.slow
def test_a_preloaded_allocator_is_mapped_into_the_rank(tmp_path: Path) -> None:
    found = find_allocators()
    if not found:
        pytest.skip("no tcmalloc or jemalloc on this machine (scripts/test.sh installs one)")
    for name in found:
        start = _start_events(tmp_path, name, 1, allocator_env(name, found))[0]
        assert start["allocator"] == name
