"""Worker accounts as users have them, over real sshd: a ``~/.bashrc`` that prints a notice, a
login shell that is fish, zsh or dash (``remote.hosts.login_shell``), and one that cannot run
corral's ``sh -c`` (tcsh: a newline inside quotes). Each account is a real Unix user
(``worker_account``), let in by the test daemons with the same client key."""

from __future__ import annotations

import pytest

try:
    from runkit import run_to_end, tiny_run
except ImportError:  # collected as a package
    from tests.remote.runkit import run_to_end, tiny_run  # type: ignore[no-redef]

from remote.api import RunStatus
from remote.checks.preflight import check_cluster
from remote.config.cluster import ClusterConfig
from remote.hosts.pool import HostPool

pytestmark = [pytest.mark.sshd, pytest.mark.slow]


def _account_cluster(sshd_cluster, worker_account, kind: str, monkeypatch, tmp_path
                     ) -> tuple[ClusterConfig, str]:
    """Two daemons, both logging in as a ``kind`` account: workdir and run_root in its home
    (``~``: each side expands it, this machine's into the test's own folder)."""
    account = worker_account(kind)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cluster = sshd_cluster(2)
    cluster.admit(account)
    hosts = [cluster.host(name, user=account, workdir="~/corral-work") for name in ("h0", "h1")]
    config = cluster.config(hosts=hosts, run=tiny_run(steps=2))
    cluster_section = config.cluster.__class__(
        name=config.cluster.name, master="h0", run_root="~/corral-runs")
    return config.__class__(path=config.path, cluster=cluster_section, hosts=config.hosts,
                            run=config.run, ssh=config.ssh), account


async def _check(config: ClusterConfig):
    pool = HostPool(config)
    try:
        return await check_cluster(config, pool)
    finally:
        await pool.aclose()


@pytest.mark.parametrize("kind", ["banner", "fish", "zsh", "dash"])
async def test_any_login_shell_passes_the_check_and_runs(
        sshd_cluster, worker_account, kind, monkeypatch, tmp_path) -> None:
    config, _ = _account_cluster(sshd_cluster, worker_account, kind, monkeypatch, tmp_path)
    report = await _check(config)
    failed = [(i.host, i.name, i.detail) for i in report.items if not i.ok]
    assert not failed, failed
    names = {i.name for i in report.items if i.host == "h1"}
    assert {"python", "disk", "leftovers", "interface"} <= names, names
    shells = [i for i in report.items if i.name == "shell"]
    if kind == "banner":  # named once per host, its first line, with the fix
        assert [i.host for i in shells] == ["h0", "h1"], shells
        assert all("Welcome to node-7" in i.detail and i.detail.startswith("warning")
                   and "interactive" in i.hint for i in shells), shells
    else:
        assert not shells, shells
    _, events = await run_to_end(config)
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final


async def test_a_shell_that_cannot_run_sh_is_named_with_the_fix(
        sshd_cluster, worker_account, monkeypatch, tmp_path) -> None:
    config, account = _account_cluster(sshd_cluster, worker_account, "tcsh", monkeypatch,
                                       tmp_path)
    report = await _check(config)
    shells = [i for i in report.items if i.name == "shell"]
    assert [i.host for i in shells] == ["h0", "h1"] and not any(i.ok for i in shells), shells
    assert all("tcsh" in i.detail and f"chsh -s /bin/bash {account}" in i.hint
               for i in shells), shells
    # Nothing was probed on those hosts: no item of theirs says ok but that they answered.
    untested = [(i.host, i.name) for i in report.items
                if i.ok and i.host in ("h0", "h1") and i.name != "reachable"]
    assert not untested, untested
