"""The runs (slow tier) of what ``tests/remote/test_memory_facts.py`` tests: ``corral check`` (and
``--dry-run``) shows each rank's memory budget and the training state it would hold, and fails a
run whose state cannot fit, naming by how much (remote/checks/memory_facts.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from profiles.store import save_profile
from remote.config.read import parse_cluster
from tests.remote.scenarios.test_checks import run_check
from tests.remote.test_estimate_check import profile
from tests.remote.test_memory_facts import P


@pytest.mark.slow  # a whole check of two local hosts (their probes, the mesh)
async def test_a_real_check_refuses_a_run_whose_state_cannot_fit_before_it_starts(
        tmp_path: Path) -> None:
    store = tmp_path / "store"
    save_profile(dataclasses.replace(profile("gpu-box"), gradient_bytes=P), root=store)
    hosts = "".join(
        f'[[hosts]]\nname = "{name}"\naddress = "local"\ngpus = 0\nnproc = 1\n'
        f'workdir = "{tmp_path}/work-{name}"\nenv = {{ CORRAL_PROFILE_DIR = "{store}" }}\n'
        f"{extra}" for name, extra in (("a", "state_budget = 0.75\n"), ("b", "")))
    text = (f'[cluster]\nname = "t"\nmaster = "a"\nrun_root = "{tmp_path}/runs"\n{hosts}'
            '[run]\nsteps = 2\nmodel = "resnet18"\noptimizer = "adamw"\n'
            'shard_state = "gradients"\n')
    report = await run_check(parse_cluster(text, path=tmp_path / "cluster.toml"))
    # Host a gives 0.75 GiB; 1 GiB of parameters is held whole on every rank.
    row = next(i for i in report.items if (i.host, i.name) == ("a", "state memory"))
    assert not row.ok and row.detail.startswith("rank 0: ") and "of 0.75 GiB" in row.detail
    assert "short" in row.hint and "state_budget of host 'a'" in row.hint
    assert not report.ok  # the run is refused: no plan, nothing started
    measured = next(i for i in report.items if (i.host, i.name) == ("b", "state memory"))
    assert measured.ok and "rank 1: " in measured.detail  # b's measured memory is its budget
