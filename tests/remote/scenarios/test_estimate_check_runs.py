"""The runs (slow tier) of what ``tests/remote/test_estimate_check.py`` tests: ``corral check``
(and ``--dry-run``, the console's check view) says before the run which host will sit out of the
gradient exchange and what each adds, from the profiles stored on each host and its link;
without them it says what to do instead of guessing."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from profiles.store import save_profile
from remote.checks import mesh_verdict
from remote.checks.mesh import check_mesh
from tests.remote.scenarios.test_checks import run_check
from tests.remote.test_estimate_check import SLOWDOWNS, profile, table_text


@pytest.mark.slow
async def test_a_real_check_over_ssh_reads_each_hosts_own_profiles_and_link(
        tmp_path: Path, sshd_cluster: Callable[..., object],
        monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = sshd_cluster(3)
    names = dict(zip(("h0", "h1", "h2"), SLOWDOWNS, strict=True))
    hosts = []
    for daemon, name in names.items():  # each host its own store, named in its env table
        store = tmp_path / f"store-{daemon}"
        save_profile(profile(name), root=store)
        hosts.append(ssh.host(daemon, slowdown=SLOWDOWNS[name],  # type: ignore[attr-defined]
                              env={"CORRAL_PROFILE_DIR": str(store)}, link_gbit=10.0))
    config = ssh.config(hosts=hosts)  # type: ignore[attr-defined]
    config = dataclasses.replace(config, run=dataclasses.replace(
        config.run, model="resnet18", global_batch=512))

    # A measured link comes first (loopback's tens of Gbit/s, whatever the load): link_gbit
    # is what decides where nothing is measured.
    with monkeypatch.context() as unmeasured:
        unmeasured.setattr(mesh_verdict, "check_mesh",
                           functools.partial(check_mesh, measure=False))
        report = await run_check(config)
    assert [(v.host, v.pays) for v in report.estimate] == [
        ("h0", True), ("h1", True), ("h2", False)]
    assert "`h2`: would sit out" in table_text(report) and report.ok
    # Without link_gbit the full-mesh check's measured links stand in (here: loopback's).
    bare = dataclasses.replace(config, hosts=tuple(dataclasses.replace(h, link_gbit=None)
                                                   for h in config.hosts))
    report = await run_check(bare)
    assert {v.missing for v in report.estimate} == {""} and len(report.links) == 6
    # Nothing measured and the loopback shows no speed: the check names the key to set.
    monkeypatch.setattr(mesh_verdict, "check_mesh", functools.partial(check_mesh, measure=False))
    report = await run_check(bare)
    assert {v.missing for v in report.estimate} == {"link speed"}
    assert "set link_gbit in the [[hosts]] entry named 'h2'" in table_text(report)
