"""``corral check`` on real processes: local hosts run every probe through ``sh -c`` here.

A wrong interpreter, a torch of another version (a wrapper interpreter that puts a fake torch
first on the path), a GPU count the host does not have, a leftover process of an earlier run,
a rendezvous port that is taken and a master address the workers cannot reach must each fail
their own check with a hint; a healthy cluster passes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import remote.checks.rendezvous_port
from remote.api import CheckItem, CheckReport
from remote.checks.preflight import check_cluster
from remote.config.cluster import ClusterConfig
from remote.config.read import load_cluster
from remote.hosts.pool import HostPool
from remote.records.runs import RunInfo, new_run_id, write_run_info
from trainer.compat import TORCH_RANGE
from trainer.launch_contract import RUN_ID_ENV

pytestmark = pytest.mark.slow


def write_cluster(tmp_path: Path, hosts: str, *, cluster_extra: str = "") -> ClusterConfig:
    path = tmp_path / "cluster.toml"
    path.write_text(
        f'[cluster]\nname = "t"\nmaster = "a"\nrun_root = "{tmp_path}/runs"\n{cluster_extra}\n'
        f"{hosts}\n[run]\nsteps = 2\n",
        encoding="utf-8",
    )
    return load_cluster(path)


def local_host(name: str, gpus: int = 0, **extra: str) -> str:
    lines = [f'[[hosts]]\nname = "{name}"\naddress = "local"\ngpus = {gpus}\nnproc = 1\n'
             f'workdir = "{{tmp}}/work-{name}"']
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def environ_of(pid: int) -> str:
    """A process's environment as text; empty once it has ended."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


async def run_check(config: ClusterConfig) -> CheckReport:
    pool = HostPool(config)
    try:
        return await check_cluster(config, pool)
    finally:
        await pool.aclose()


def find(report: CheckReport, host: str, name: str) -> CheckItem:
    matches = [i for i in report.items if i.host == host and i.name == name]
    assert len(matches) == 1, f"{host}/{name}: {report.items}"
    return matches[0]


def fake_torch_python(root: Path, *, version: str, gpus: int, version_file: bool) -> str:
    """An interpreter that finds a torch stand-in before the real one.

    Without ``version_file`` the probe has to import it (as on a host with GPU device nodes);
    the stand-in then reports ``gpus`` CUDA devices.
    """
    site = root / f"fake-site-{version}-{gpus}" / "torch"
    site.mkdir(parents=True)
    if version_file:
        (site / "version.py").write_text(f'__version__ = "{version}"\n', encoding="utf-8")
    (site / "__init__.py").write_text(
        f'__version__ = "{version}"\n'
        f"class cuda:\n    is_available = staticmethod(lambda: {gpus > 0})\n"
        f"    device_count = staticmethod(lambda: {gpus})\n"
        "    get_device_name = staticmethod(lambda i: 'Fake GPU')\n"
        "class version:\n    cuda = '12.1'\n", encoding="utf-8")
    wrapper = site.parent / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={site.parent} exec {sys.executable} "$@"\n',
                       encoding="utf-8")
    wrapper.chmod(0o755)
    return str(wrapper)


@contextlib.contextmanager
def leftover_process(run_root: Path, run_id: str, *,
                     of_the_run: bool = True) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line names a run directory, as a crashed run's rank would
    (with the run id in its environment, as the launcher sets it), or, not ``of_the_run``,
    as a user's ``pgrep -f -- '--run-dir ...'`` would."""
    env = {k: v for k, v in os.environ.items() if k != RUN_ID_ENV}
    if of_the_run:
        env[RUN_ID_ENV] = run_id
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                             "--run-dir", f"{run_root}/{run_id}/"], stdin=subprocess.PIPE,
                            env=env)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


async def test_a_process_that_only_names_a_run_directory_is_no_leftover(
        tmp_path: Path) -> None:
    hosts = local_host("a").replace("{tmp}", str(tmp_path))
    config = write_cluster(tmp_path, hosts)
    with leftover_process(tmp_path / "runs", "t-20261122-000000-abcdef", of_the_run=False):
        report = await run_check(config)
    leftovers = find(report, "a", "leftovers")
    assert leftovers.ok and leftovers.detail == "none", leftovers


async def test_a_leftover_of_another_cluster_on_the_shared_run_root_is_stopped_with_its_file(
        tmp_path: Path) -> None:
    hosts = local_host("a").replace("{tmp}", str(tmp_path))
    config = write_cluster(tmp_path, hosts)
    # A second cluster.toml over the same run_root, whose run this machine started.
    other_path = tmp_path / "other" / "cluster.toml"
    other_path.parent.mkdir()
    other_path.write_text((tmp_path / "cluster.toml").read_text(encoding="utf-8")
                          .replace('name = "t"', 'name = "other"'), encoding="utf-8")
    other = load_cluster(other_path)
    run_id = new_run_id(other.cluster.name)
    write_run_info(other, RunInfo(run_id=run_id, cluster="other", state="running",
                                  started=0.0, hosts=("a",), config_path=str(other_path)))
    with leftover_process(tmp_path / "runs", run_id):
        report = await run_check(config)
    leftovers = find(report, "a", "leftovers")
    assert not leftovers.ok
    assert f"{run_id} (cluster 'other' of {other_path})" in leftovers.detail, leftovers
    assert leftovers.hint == f"corral stop -c {other_path} {run_id}"


async def test_a_healthy_local_cluster_passes_every_check(tmp_path: Path) -> None:
    hosts = (local_host("a") + local_host("b")).replace("{tmp}", str(tmp_path))
    report = await run_check(write_cluster(tmp_path, hosts))
    assert report.ok, report.failures()
    for host in ("a", "b"):
        for name in ("reachable", "python", "torch", "cuda", "disk", "leftovers", "interface",
                     "rendezvous-port"):
            find(report, host, name)
    assert find(report, "*", "torch").ok
    # Both hosts are this machine and the master address is 127.0.0.1: loopback is right.
    assert find(report, "a", "interface").detail.startswith("lo (holds 127.0.0.1)")
    assert find(report, "b", "interface").detail.startswith("lo (routes to 127.0.0.1)")
    assert "reaches 127.0.0.1:" in find(report, "b", "rendezvous-port").detail
    # Where the check's time went (issue 58): each host's probe, its torch probe inside it
    # (torch never imported without a GPU device node), the full mesh.
    timed = {(t.host, t.name): t for t in report.timings}
    for host in ("a", "b"):
        assert 0 < timed[host, "torch"].seconds < timed[host, "probe"].seconds
        if not Path("/dev/nvidiactl").exists():
            assert timed[host, "torch"].how == "version.py"
    assert ("*", "mesh") in timed
    assert [i.host for i in report.items] == sorted(
        (i.host for i in report.items), key=lambda h: {"a": 0, "b": 1, "*": 2}[h])


async def test_each_broken_host_fails_its_own_check_with_a_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote.checks.rendezvous_port, "PORT_TEST_S", 1.5)
    # Tells this test's processes from those of tests running beside it (pytest-xdist).
    monkeypatch.setenv("CORRAL_TEST_CHECKS", str(tmp_path))
    hosts = (
        local_host("a")
        + local_host("b", python='"{}"'.format(fake_torch_python(
            tmp_path, version="1.13.1", gpus=0, version_file=True)))
        + local_host("c", python='"/nonexistent/python3"')
        + local_host("d", gpus=2, python='"{}"'.format(fake_torch_python(
            tmp_path, version="2.13.0+cu121", gpus=1, version_file=False)))
    ).replace("{tmp}", str(tmp_path))
    config = write_cluster(tmp_path, hosts, cluster_extra='master_addr = "nohost.invalid"')
    with leftover_process(tmp_path / "runs", "t-old-run"):
        report = await run_check(config)
    assert not report.ok

    torch_all = find(report, "*", "torch")
    assert not torch_all.ok
    assert "1.13.1 on b" in torch_all.detail and "a, d" in torch_all.detail
    assert "torch==" in torch_all.hint
    torch_b = find(report, "b", "torch")  # 1.13.1 is also outside the range corral admits
    assert not torch_b.ok and "1.13.1" in torch_b.detail and TORCH_RANGE in torch_b.detail
    assert f"-m pip install 'torch{TORCH_RANGE}'" in torch_b.hint and "on b" in torch_b.hint

    python_c = find(report, "c", "python")
    assert not python_c.ok and "/nonexistent/python3" in python_c.detail
    assert "python = " in python_c.hint and "'c'" in python_c.hint
    assert "corral setup" not in python_c.hint  # setup would change nothing: python is named

    cuda_d = find(report, "d", "cuda")
    assert not cuda_d.ok and "1 GPU(s): Fake GPU (CUDA 12.1)" in cuda_d.detail
    assert "gpus = 1" in cuda_d.hint

    leftovers = find(report, "a", "leftovers")
    assert not leftovers.ok and "t-old-run" in leftovers.detail
    assert leftovers.hint == "corral stop t-old-run"

    # Nobody can resolve the master address: every worker fails to reach the port.
    assert find(report, "a", "rendezvous-port").ok
    for worker in ("b", "d"):
        item = find(report, worker, "rendezvous-port")
        assert not item.ok and "nohost.invalid" in item.detail and "master_addr" in item.hint
    # The port-test listener on the master is gone although not every worker connected.
    listeners = subprocess.run(["pgrep", "-f", "port, want, deadline"], capture_output=True,
                               text=True).stdout.split()
    assert [p for p in listeners if str(tmp_path) in environ_of(int(p))] == []
    interface = find(report, "b", "interface")
    assert not interface.ok and "cannot resolve" in interface.detail
    assert not [i for i in report.items if i.host == "c" and i.name == "rendezvous-port"]


async def test_a_taken_rendezvous_port_fails_on_the_master(tmp_path: Path) -> None:
    with socket.create_server(("", 0)) as taken:
        port = taken.getsockname()[1]
        hosts = (local_host("a") + local_host("b")).replace("{tmp}", str(tmp_path))
        config = write_cluster(tmp_path, hosts, cluster_extra=f"rendezvous_port = {port}")
        report = await run_check(config)
    item = find(report, "a", "rendezvous-port")
    assert not item.ok and f"port {port} not free" in item.detail
    assert "rendezvous_port" in item.hint


async def test_an_unreachable_host_fails_within_the_connect_timeout(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hosts = local_host("a").replace("{tmp}", str(tmp_path)) + (
        f'[[hosts]]\nname = "gone"\naddress = "127.0.0.1"\nport = {port}\ngpus = 0\n')
    config = write_cluster(tmp_path, hosts + "[ssh]\nconnect_timeout = 3.0\n",
                           cluster_extra='master_addr = "127.0.0.1"')
    report = await run_check(config)
    item = find(report, "gone", "reachable")
    assert not item.ok and "gone" in item.detail and "ssh 127.0.0.1" in item.hint
    assert [i.name for i in report.items if i.host == "gone"] == ["reachable"]
    assert find(report, "a", "rendezvous-port").ok


async def test_auto_port_falls_back_to_any_free_port_when_the_first_try_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import remote.checks.preflight
    from remote.checks.preflight import check_and_plan

    with socket.create_server(("", 0)) as taken:
        port = taken.getsockname()[1]
        monkeypatch.setattr(remote.checks.preflight, "auto_candidate", lambda: port)
        hosts = (local_host("a") + local_host("b")).replace("{tmp}", str(tmp_path))
        config = write_cluster(tmp_path, hosts)
        pool = HostPool(config)
        try:
            report, facts = await check_and_plan(config, pool, user=None)
        finally:
            await pool.aclose()
    assert report.ok, report.failures()
    assert facts.port is not None and facts.port != port
    assert f"port {facts.port} free on a (auto)" == find(report, "a", "rendezvous-port").detail
    assert f"reaches 127.0.0.1:{facts.port}" == find(report, "b", "rendezvous-port").detail



async def test_a_missing_imports_fix_names_the_interpreter_the_probe_ran(tmp_path: Path) -> None:
    # A host without `python` runs its set-up venv if there is one, else the default: the fix
    # is a command to paste, so it names the one the probe ran, not both.
    (tmp_path / "train.py").write_text("import corral_surely_absent_package\n")
    config = write_cluster(tmp_path, local_host("a").replace("{tmp}", str(tmp_path)))
    config = replace(config, run=replace(config.run, script=str(tmp_path / "train.py")))
    report = await run_check(config)
    imports = find(report, "a", "imports")
    assert not imports.ok and "corral_surely_absent_package" in imports.detail
    assert f"on a: {sys.executable} -m pip install corral" in imports.hint
    assert "if set up" not in imports.hint + imports.detail
