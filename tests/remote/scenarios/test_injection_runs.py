"""The runs (slow tier) of what ``tests/remote/test_injection.py`` tests: shell metacharacters in
cluster.toml never execute."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from remote.checks.preflight import check_cluster
from remote.config.read import load_cluster
from remote.hosts.pool import HostPool
from remote.hosts.profile_hosts import profile_host
from remote.hosts.push import build_bundle
from remote.hosts.transport import LocalTransport
from tests.remote.test_injection import CANARY, toml_str

ROOT = Path(__file__).resolve().parents[3]


EVIL = (f"e v;touch {CANARY};$(touch {CANARY})`touch {CANARY}`'\"&&touch {CANARY}"
        f"||touch {CANARY}|touch {CANARY}>{CANARY} #$HOME *")


EVIL_WORD = f"x;touch${{IFS}}{CANARY};$(touch${{IFS}}{CANARY})`touch${{IFS}}{CANARY}`'\"&&"


EVIL_ENV = EVIL + f"\ntouch {CANARY}\n"


def canaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(CANARY)]


@pytest.fixture
def evil_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``<tmp>/<EVIL>`` holding a working python3; HOME and cwd inside ``tmp``."""
    evil = tmp_path / EVIL
    evil.mkdir()
    # A wrapper, not a symlink: a venv's python found through a symlink elsewhere does not see
    # its pyvenv.cfg, so it would run without the venv's packages (torch).
    wrapper = evil / "python3"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    wrapper.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return evil


def write_cluster(tmp_path: Path, evil: Path, *, master_addr: str = "127.0.0.1") -> Path:
    hosts = "".join(
        f"[[hosts]]\nname = \"{name}\"\naddress = \"local\"\npython = {toml_str(str(evil))}"
        f"\nworkdir = {toml_str(str(evil / f'work-{name}'))}\ngpus = 0\nnproc = 1\n"
        f"threads = 1\nenv = {{ EVIL = {toml_str(EVIL_ENV)}, OMP_NUM_THREADS = \"1\" }}\n\n"
        for name in ("a", "b"))
    text = (f"[cluster]\nname = \"inj\"\nmaster = \"a\"\nmaster_addr = {toml_str(master_addr)}\n"
            f"run_root = {toml_str(str(evil / 'runs'))}\n\n{hosts}"
            f"[run]\nmodel = \"simple_cnn\"\ndataset = \"synthetic_image\"\n"
            f"data_dir = {toml_str(str(evil / 'data'))}\nsamples = 96\nglobal_batch = 16\n"
            f"steps = 2\npolicy = \"static\"\ncheckpoint_every = 0\n")
    path = tmp_path / "cluster.toml"
    path.write_text(text.replace(toml_str(str(evil)), toml_str(str(evil / "python3")), 2),
                    encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_whole_run_and_stop_through_hostile_paths_and_env_execute_nothing(
    tmp_path: Path, evil_dir: Path
) -> None:
    path = write_cluster(tmp_path, evil_dir)
    config = load_cluster(path)
    assert config.hosts[0].python == str(evil_dir / "python3")
    assert config.hosts[0].env["EVIL"] == EVIL_ENV
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def corral(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "console", "-c", str(path), *args],
                              capture_output=True, text=True, timeout=400, env=env,
                              cwd=tmp_path)

    ran = corral("run")
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    run_id = next(p.name for p in (evil_dir / "runs").iterdir() if (p / "run.json").exists())
    stopped = corral("stop", run_id, "--grace", "1")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert canaries(tmp_path) == []


@pytest.mark.slow
async def test_check_and_profile_with_hostile_values_execute_nothing(
    tmp_path: Path, evil_dir: Path
) -> None:
    # master_addr cannot resolve, so the port tests fail (torchrun's, and the membership
    # store's: every run of corral's own loop has one) — but nothing in them may run.
    config = load_cluster(write_cluster(tmp_path, evil_dir, master_addr=EVIL_WORD))
    pool = HostPool(config)
    try:
        report = await check_cluster(config, pool)
    finally:
        await pool.aclose()
    assert canaries(tmp_path) == []
    assert not report.ok
    assert {i.name for i in report.failures()} <= {"rendezvous-port", "membership-port",
                                                   "interface"}

    # A stand-in benchmark in the hostile directory: the profile command runs it from there.
    fake = evil_dir / "fake-python"
    fake.write_text('#!/bin/sh\necho \'{"device": "cpu", "device_name": "x", "batches": [8],'
                    ' "step_s": [0.5], "a": 0.1, "c": 0.05, "max_batch": null}\'\n')
    fake.chmod(0o755)
    host = config.hosts[0]
    from dataclasses import replace

    result = await profile_host(LocalTransport(replace(host, python=str(fake))), "simple_cnn",
                                build_bundle())
    assert result.ok, result.error
    assert result.samples_per_s == (16.0,) and result.per_sample_s == 0.05
    assert canaries(tmp_path) == []
