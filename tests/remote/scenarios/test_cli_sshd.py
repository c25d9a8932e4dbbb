"""The headless commands end to end over real sshd daemons (loopback hosts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

try:
    from conftest import SshdCluster
    from runkit import run_processes
except ImportError:  # collected as a package module
    from tests.remote.conftest import SshdCluster  # type: ignore[no-redef]
    from tests.remote.runkit import run_processes  # type: ignore[no-redef]

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


def write_toml(cluster: SshdCluster, tmp_path: Path, run: str, host_lines: str = "") -> Path:
    """cluster.toml for every daemon of ``cluster`` with ``run`` as its [run] table;
    ``host_lines`` (keys, one per line) go into every host's table."""
    hosts = "".join(
        f'[[hosts]]\nname = "{d.name}"\naddress = "127.0.0.1"\nport = {d.port}\nuser = "root"\n'
        f'identity_file = "{cluster.client_key}"\npython = "{sys.executable}"\n'
        f'workdir = "{tmp_path}/work/{d.name}"\ngpus = 0\nnproc = 1\nthreads = 1\n'
        f'{host_lines}env = {{ CORRAL_PROFILE_DIR = "{tmp_path}/profiles/{d.name}" }}\n\n'
        for d in cluster.hosts)
    path = tmp_path / "cluster.toml"
    path.write_text(
        f'[cluster]\nname = "cli"\nmaster = "h0"\nrun_root = "{tmp_path}/runs"\n\n{hosts}'
        f"[run]\n{run}\n\n[ssh]\nconnect_timeout = 5.0\n"
        f'known_hosts_file = "{cluster.known_hosts}"\nconfig_file = "{cluster.ssh_config}"\n',
        encoding="utf-8")
    return path


def corral(path: Path, *args: str, timeout: float = 300,
           stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console", "-c", str(path), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=path.parent,
                          input=stdin,
                          env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)})


def test_check_refuses_unknown_host_keys_until_trusted_and_trust_replaces_a_changed_key(
    sshd_cluster: Callable[..., SshdCluster], tmp_path: Path
) -> None:
    """Both ways a key gets trusted in one cluster: h1's unknown key with ``--yes``, then a
    changed key recorded for h0 shown, asked about and replaced; ``check`` refuses both hosts
    before and passes after."""
    cluster = sshd_cluster(2, trusted=False)
    path = write_toml(cluster, tmp_path, "steps = 2")
    h0, h1 = cluster.hosts
    refused = corral(path, "check")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "corral trust h0" in refused.stdout and "corral trust h1" in refused.stdout
    trusted = corral(path, "trust", "h1", "--yes")
    assert trusted.returncode == 0, trusted.stderr
    assert h1.fingerprint in trusted.stdout
    [h1_line] = cluster.known_hosts.read_text().splitlines()
    # known_hosts records h1's key for h0's address: to corral, h0's key has changed.
    changed = h1_line.replace(f":{h1.port} ", f":{h0.port} ")
    assert changed != h1_line, h1_line
    cluster.known_hosts.write_text(changed + "\n" + h1_line + "\n")
    before = cluster.known_hosts.read_text()
    refused = corral(path, "trust", "h0", stdin="n\n")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert h0.fingerprint in refused.stdout and h1.fingerprint in refused.stdout
    assert "DIFFERENT key" in refused.stdout and "Trust this key?" in refused.stdout
    assert cluster.known_hosts.read_text() == before
    accepted = corral(path, "trust", "h0", stdin="y\n")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "replaced 1 old line" in accepted.stdout
    # One line per host: the old key of h0 replaced, not appended to; h1's line untouched.
    after = cluster.known_hosts.read_text().splitlines()
    assert len(after) == 2 and after[0] == h1_line
    passed = corral(path, "check")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "all checks passed" in passed.stdout


def test_run_detach_then_status_and_stop_leave_nothing(
    sshd_cluster: Callable[..., SshdCluster], tmp_path: Path
) -> None:
    cluster = sshd_cluster(2)
    # Emulated slow devices (trainer/step/slowdown.py): the ranks sleep most of the seconds
    # the status and stop commands take instead of each taking a core; nothing asserted here
    # depends on the speed.
    path = write_toml(cluster, tmp_path, 'samples = 64\nglobal_batch = 8\nsteps = 100000\n'
                      'checkpoint_every = 0\npolicy = "static"', host_lines="slowdown = 10.0\n")
    started = corral(path, "run", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = json.loads(next((tmp_path / "runs").glob("*/run.json")).read_text())["run_id"]
    assert f"corral stop {run_id}" in started.stdout
    assert run_processes(run_id), "the detached run is not running"
    status = corral(path, "status")
    assert run_id in status.stdout and "running" in status.stdout
    stopped = corral(path, "stop", "--grace", "3")  # no RUN: the newest live run
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"run {run_id} stopped; no process of it is left" in stopped.stdout
    assert run_processes(run_id) == []
    assert "stopped" in corral(path, "status").stdout
    nothing = corral(path, "stop")
    assert nothing.returncode == 2 and "nothing to stop" in nothing.stderr


def test_profile_benchmarks_every_host_and_stores_the_profiles(
    sshd_cluster: Callable[..., SshdCluster], tmp_path: Path
) -> None:
    cluster = sshd_cluster(2)
    path = write_toml(cluster, tmp_path, 'model = "simple_cnn"')
    done = corral(path, "profile")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("│ h")]
    assert len(rows) == 2 and all("cpu" in row and " @ 8" in row for row in rows)
    for daemon in cluster.hosts:
        stored = list((tmp_path / "profiles" / daemon.name).rglob("*.toml"))
        assert len(stored) == 1, f"no profile stored for {daemon.name}"
