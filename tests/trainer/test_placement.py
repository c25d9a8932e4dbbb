"""CPU placement: disjoint cores per rank, cores near a GPU, and the allocator switch.

The core plans are pure functions (checked for every shape with hypothesis); the allocator and
the affinity are then checked in real rank processes started by torch's launcher, as a run
starts them: the start event reports what the process really has (its /proc/self/maps, its
affinity), so a switch that did nothing would show.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.profiles.fake_pynvml as fake_nvml
from profiles.nvml import NvmlSession
from trainer.placement import (
    GLIBC_TUNING,
    allocator_env,
    choose_allocator,
    format_cpulist,
    gpu_near_cores,
    parse_cpulist,
    plan_cores,
    settle_allocator,
    split_cores,
)

cores_sets = st.frozensets(st.integers(0, 300), min_size=1, max_size=64)


@given(cores_sets, st.integers(1, 70))
def test_rank_shares_are_disjoint_and_cover_the_cores_given(cores: frozenset[int],
                                                           ranks: int) -> None:
    shares = split_cores(cores, ranks)
    if ranks > len(cores):
        assert shares is None  # more ranks than cores: nothing pinned
        return
    assert shares is not None and len(shares) == ranks
    flat = [c for share in shares for c in share]
    assert len(flat) == len(set(flat))  # disjoint
    assert set(flat) == cores  # covering
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # as equal as can be
    assert flat == sorted(cores)  # contiguous runs, in order


@given(cores_sets)
def test_cpulists_round_trip(cores: frozenset[int]) -> None:
    assert parse_cpulist(format_cpulist(cores)) == cores


def test_cpulist_format_and_errors() -> None:
    assert format_cpulist({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert parse_cpulist("0-3,8\n") == frozenset({0, 1, 2, 3, 8})
    for bad in ("", "3-1", "a", "-2"):
        with pytest.raises(ValueError):
            parse_cpulist(bad)


def test_gpu_ranks_share_the_cores_near_their_own_gpu() -> None:
    allowed = frozenset(range(16))
    socket0, socket1 = frozenset(range(8)), frozenset(range(8, 16))
    # Four ranks, GPUs 0 and 1 near socket 0, GPUs 2 and 3 near socket 1.
    plan = plan_cores(allowed, 4, [socket0, socket0, socket1, socket1])
    assert plan == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11), (12, 13, 14, 15)]
    # Where the host does not say, a rank shares all the cores it may use.
    assert plan_cores(allowed, 2, [socket1, None]) == [tuple(range(8, 16)), tuple(range(16))]
    # Near cores outside the allowed set do not count.
    assert plan_cores(frozenset({0, 1}), 1, [frozenset({4, 5})]) == [(0, 1)]


def test_cores_near_a_gpu_come_from_nvml_else_from_sys(tmp_path: Path) -> None:
    device = tmp_path / "bus/pci/devices/0000:17:00.0"
    device.mkdir(parents=True)
    (device / "local_cpulist").write_text("4-7\n")
    fake_nvml.configure({"gpus": [
        {"uuid": "GPU-a", "bus_id": "00000000:17:00.0", "cpu_affinity": [0, 1, 2, 70]},
        {"uuid": "GPU-b", "bus_id": "00000000:17:00.0", "cpu_affinity": "unsupported"},
        {"uuid": "GPU-c", "cpu_affinity": "unsupported", "bus_id": "unsupported"},
    ]})
    session = NvmlSession.open(fake_nvml)
    assert session is not None
    with session:
        assert gpu_near_cores(session, 0, str(tmp_path)) == frozenset({0, 1, 2, 70})
        assert gpu_near_cores(session, 1, str(tmp_path)) == frozenset({4, 5, 6, 7})
        assert gpu_near_cores(session, 2, str(tmp_path)) is None
    assert gpu_near_cores(None, 0) is None


def test_allocator_choice_and_environment_both_ways() -> None:
    found = {"tcmalloc": "/x/libtcmalloc_minimal.so.4", "jemalloc": "/x/libjemalloc.so.2"}
    assert choose_allocator("auto", found) == "tcmalloc"
    assert choose_allocator("auto", {"jemalloc": found["jemalloc"]}) == "jemalloc"
    assert choose_allocator("auto", {}) == "glibc"
    assert choose_allocator("off", found) == "off"
    env = allocator_env("tcmalloc", found, preload="/y/libother.so")
    assert env["LD_PRELOAD"] == "/x/libtcmalloc_minimal.so.4:/y/libother.so"
    assert allocator_env("glibc", {}) == {"CORRAL_ALLOCATOR": "glibc", **GLIBC_TUNING}
    assert allocator_env("off", found) == {"CORRAL_ALLOCATOR": "off"}
    assert "MALLOC_CONF" in allocator_env("jemalloc", found)
    maps = "7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n"
    assert settle_allocator({}, maps) == "jemalloc"
    assert settle_allocator({"CORRAL_ALLOCATOR": "off"}, "") == 'glibc defaults (allocator = "off")'
    assert settle_allocator(dict(GLIBC_TUNING), "") == "glibc tuned"
