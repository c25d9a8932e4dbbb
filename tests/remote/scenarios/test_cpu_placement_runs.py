"""The runs (slow tier) of what ``tests/remote/test_cpu_placement.py`` tests: the launch plan's CPU
side: allocator environment per host, cores for hosts on one machine, and what ``corral check``
says about both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.remote.scenarios.test_checks import find, local_host, run_check, write_cluster
from trainer.placement import find_allocators


@pytest.mark.slow
async def test_corral_check_reports_allocator_and_cores(tmp_path: Path) -> None:
    hosts = (local_host("a") + local_host("b")).replace("{tmp}", str(tmp_path))
    report = await run_check(write_cluster(tmp_path, hosts))
    allowed = frozenset(os.sched_getaffinity(0))
    allocator = find(report, "a", "allocator")
    best = next(iter(find_allocators()), None)
    assert allocator.ok and allocator.detail.startswith(best or "glibc, tuned")
    cores = find(report, "b", "cores")
    if len(allowed) >= 2:  # the two local hosts share this machine's cores out
        assert "1 rank(s) on cores" in cores.detail
    else:
        assert "not pinned" in cores.detail
