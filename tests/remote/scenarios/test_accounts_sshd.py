"""Worker accounts as users have them, over real sshd: a ``~/.bashrc`` that prints a notice (and
an xterm title with no newline), a login shell that is fish, zsh or dash
(``remote.hosts.login_shell``), and one that cannot run corral's ``sh -c`` (tcsh: a newline
inside quotes). Each account is a real Unix user (``worker_account``), let in by the test
daemons with the same client key. The banner and fish accounts' runs are the embedded
cluster.toml's, with its hosts on those accounts as a user writes them: ``corral run
--detach``, followed by ``corral attach``, ``corral leave`` of the middle host (fish) and
``corral join`` of it, with corral's own loop and with a DDP-helper script printing a ``\r``
progress bar."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

try:
    from conftest import SshdCluster
    from runkit import run_to_end, tiny_run
except ImportError:  # collected as a package
    from tests.remote.conftest import SshdCluster  # type: ignore[no-redef]
    from tests.remote.runkit import run_to_end, tiny_run  # type: ignore[no-redef]

from remote.api import RunStatus
from remote.checks.preflight import check_cluster
from remote.config.cluster import ClusterConfig
from remote.config.init import demo_toml
from remote.hosts.pool import HostPool

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
WAIT_S = 300.0


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
    if kind in ("banner", "fish"):  # their run: the live leave and join below
        return
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


BAR = ('            print(f"\\rtrain: {step % 100:3d}%|{\'#\' * (step % 10):10s}| {step}/9999 '
       '[00:01<00:02, 9.00it/s]", end="", file=sys.stderr, flush=True)\n')
"""A tqdm-shaped progress bar on every rank, updated in place with ``\\r`` each step."""


def _users_toml(cluster: SshdCluster, accounts: dict[str, str], script: bool) -> str:
    """The embedded cluster.toml as a user edits it for sshd hosts: fast and slow on the
    banner account, medium (the middle host) on the fish account; everything else as
    shipped, ``~`` paths included (each account's own home), the run long enough to change."""
    text = demo_toml().replace("steps = 300", "steps = 100000")
    for name, daemon, kind in (("fast", 0, "banner"), ("medium", 1, "fish"),
                               ("slow", 2, "banner")):
        text = text.replace(
            f'name = "{name}"\naddress = "local"',
            f'name = "{name}"\naddress = "127.0.0.1"\nport = {cluster.hosts[daemon].port}\n'
            f'user = "{accounts[kind]}"\nidentity_file = "{cluster.client_key}"\n'
            f'python = "{sys.executable}"')
    if script:
        text = text.replace("[run]\n", '[run]\nscript = "train.py"\n'
                            'args = ["--epochs", "1000", "--pause", "0.2"]\n', 1)
    return text.replace('known_hosts = "strict"',
                        f'known_hosts_file = "{cluster.known_hosts}"')


def _train_py() -> str:
    """The DDP-helper script of the live-membership tests, with ``BAR`` after each step."""
    text = (ROOT / "tests" / "trainer" / "ddp_live_script.py").read_text()
    anchor = "            time.sleep(args.pause)\n"
    assert anchor in text
    counted = "            step = getattr(main, 'step', 0) + 1\n            main.step = step\n"
    return "import sys\n" + text.replace(anchor, anchor + counted + BAR)


def _copied(home: Path, run_id: str, host: str, member: int) -> list[dict[str, Any]]:
    """Rank ``member``'s events in this machine's copy (what `corral attach` wrote)."""
    path = home / ".corral" / "runs" / run_id / "collected" / host / "metrics" / \
        f"rank-{member}.jsonl"
    whole = path.read_text().split("\n")[:-1] if path.exists() else []  # last: being written
    return [json.loads(line) for line in whole if line.strip()]


def _changes(home: Path, run_id: str) -> list[dict[str, Any]]:
    return [e for e in _copied(home, run_id, "fast", 0) if e["event"] == "membership"]


def _wait(what: str, condition: Callable[[], bool], follower: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert follower.poll() is None, f"{what}: `corral attach` ended first"
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_S} s"
        time.sleep(0.2)  # polling this machine's copy for a condition, with a deadline


def _leave_and_join(path: Path, home: Path, run_id: str, follower: subprocess.Popen[str]
                    ) -> int:
    """``corral leave medium`` once the run stepped, then ``corral join medium``: the
    joiner's member id, once a few of its steps reached this machine's copy."""
    _wait("step 5", lambda: any(e["event"] == "step" and e["step"] >= 5
                                for e in _copied(home, run_id, "fast", 0)), follower)
    left = _corral(path, home, "leave", "medium")
    assert left.returncode == 0, left.stdout + left.stderr
    _wait("medium left", lambda: bool(_changes(home, run_id)), follower)
    joined = _corral(path, home, "join", "medium")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    _wait("medium joined", lambda: len(_changes(home, run_id)) == 2, follower)
    assert [(e["change"], e["hosts"]) for e in _changes(home, run_id)] == \
        [("left", ["medium"]), ("joined", ["medium"])]
    member = int(_changes(home, run_id)[1]["members"][-1])
    _wait("the joiner's steps copied here", lambda: len(
        [e for e in _copied(home, run_id, "medium", member) if e["event"] == "step"]) >= 3,
        follower)
    return member


def _corral(path: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console", "-c", str(path), *args],
                          capture_output=True, text=True, timeout=WAIT_S, cwd=path.parent,
                          env={**os.environ, "HOME": str(home), "COLUMNS": "200",
                               "PYTHONPATH": str(ROOT)})


@pytest.mark.timeout(900)
@pytest.mark.parametrize("script", [False, True], ids=["corral-loop", "ddp-helper"])
def test_banner_and_fish_accounts_take_a_live_leave_and_join_detached_and_followed(
        sshd_cluster, worker_account, script: bool, tmp_path: Path) -> None:
    accounts = {kind: worker_account(kind) for kind in ("banner", "fish")}
    cluster = sshd_cluster(3)
    for account in accounts.values():
        cluster.admit(account)
    home = tmp_path / "home"  # this machine's ~: the run's copy and record
    path = tmp_path / "cluster.toml"
    path.write_text(_users_toml(cluster, accounts, script), encoding="utf-8")
    if script:
        (tmp_path / "train.py").write_text(_train_py(), encoding="utf-8")
    started = _corral(path, home, "run", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = re.search(r"launched run ([^\s:]+)", started.stdout)[1]  # type: ignore[index]
    follower = subprocess.Popen(
        [sys.executable, "-m", "console", "-c", str(path), "attach", run_id, "--headless"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**os.environ, "HOME": str(home), "COLUMNS": "200", "PYTHONPATH": str(ROOT)})
    try:
        member = _leave_and_join(path, home, run_id, follower)
        stopped = _corral(path, home, "stop", run_id)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        output, _ = follower.communicate(timeout=WAIT_S)
    finally:
        if follower.poll() is None:
            _corral(path, home, "stop", run_id)
            follower.kill()
            follower.communicate()
    record = json.loads((home / ".corral" / "runs" / run_id / "run.json").read_text())
    assert record["state"] == "stopped" and "no process left on any host" in record["cleanup"]
    assert record["hosts"] == ["fast", "slow", "medium"], record
    assert "medium joined at step" in output, output[-3000:]
    assert script or "Traceback" not in output, output[-3000:]  # a script's peers: its own
    assert "Welcome to node-7" not in output and "\x1b]0;" not in output  # the banner's
    logs = _corral(path, home, "logs", run_id, "--host", "medium")
    assert logs.returncode == 0 and "\r" not in logs.stdout, logs.stdout[-2000:]
    # the joiner's lines were kept here too (on the old code: shown live, never copied)
    assert f"joined the run as member {member}" in logs.stdout, logs.stdout[-2000:]
    assert f"medium:{member} " in logs.stdout, logs.stdout[-2000:]  # its id, not rank 0's
    # each rank in the run at the stop ended, and the stop is no failure of the run's
    for host, rank in (("fast", 0), ("slow", 2), ("medium", member)):
        last = _copied(home, run_id, host, rank)[-1]
        assert last["event"] == "end" and last["status"] != "completed", (host, last)
    report = _corral(path, home, "report", run_id)
    assert report.returncode == 0 and "First failure" not in report.stdout, report.stdout
