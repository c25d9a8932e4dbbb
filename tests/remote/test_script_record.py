"""A script run is resumed as its author runs it: ``corral run --resume RUN`` without
``--script`` takes the script, its folder and its arguments from the run record, and a
relaunch keeps the attempt before's newest checkpoint whole beside the one to come."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from profiles.user_errors import UsageError
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.hosts.push_ignore import OUTPUT_PATTERNS
from remote.records.runs import RunInfo, write_run_info
from remote.run.controller import SshRunController
from remote.run.script_record import script_words, with_recorded_script
from remote.run.seed_cwd import SEED_PY


def _config(tmp_path: Path, run: RunSection) -> ClusterConfig:
    return ClusterConfig(path=tmp_path / "cluster.toml",
                         cluster=ClusterSection(name="c", master="h0",
                                                run_root=str(tmp_path / "runs")),
                         hosts=(HostSection(name="h0", address="local", gpus=0),), run=run)


def test_resume_without_script_runs_the_recorded_script_with_its_arguments(
        tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    launched = replace(_config(tmp_path, RunSection(
        script=str(tmp_path / "train.py"), args=("--init_from=resume", "--out", "out"),
        code=str(tmp_path))),
        launch_dir="sub")
    info = RunInfo(run_id="c-20261129-101500-abcdef", cluster="c", state="stopped",
                   started=time.time(), hosts=("h0",), script=script_words(launched))
    write_run_info(launched, info)
    plain = _config(tmp_path, RunSection())
    resumed = with_recorded_script(plain, info.run_id)
    assert resumed.run.script == str(tmp_path / "train.py") and resumed.launch_dir == "sub"
    assert resumed.run.args == ("--init_from=resume", "--out", "out")
    assert resumed.run.code == str(tmp_path)
    assert with_recorded_script(plain, None).run.script == resumed.run.script  # the newest
    assert with_recorded_script(launched, info.run_id) is launched  # --script wins


def test_a_relaunch_keeps_the_attempt_befores_newest_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd, hosts, kept = tmp_path / "cwd", tmp_path / "hosts", tmp_path / "kept"
    (cwd / "out").mkdir(parents=True)
    hosts.mkdir()
    (cwd / "out" / "old.pt").write_bytes(b"older")
    (cwd / "out" / "ckpt.pt").write_bytes(b"step 40")
    os.utime(cwd / "out" / "old.pt", (1, 1))
    monkeypatch.setattr(sys, "argv", ["-c", str(hosts / "h0.data"), str(cwd),
                                      str(hosts / "h0.seeded"),
                                      json.dumps(list(OUTPUT_PATTERNS)), str(kept)])
    exec(SEED_PY, {"__name__": "__main__"})
    [attempt] = list(kept.iterdir())
    assert (attempt / "out" / "ckpt.pt").read_bytes() == b"step 40"  # kept whole
    (cwd / "out" / "ckpt.pt").write_bytes(b"step 1 (started over)")  # the script's own
    assert (attempt / "out" / "ckpt.pt").read_bytes() == b"step 40"
    assert not (attempt / "out" / "old.pt").exists()  # the newest only


async def test_a_relaunch_with_edited_arguments_runs_and_records_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The console's ``r`` on a script run of a cluster.toml that names no script: the
    relaunch runs the recorded script with the arguments as edited, as a resume (so the
    attempt before's checkpoint is kept first), and the record keeps them for the next."""
    from remote.run import controller as controller_module

    (tmp_path / "train.py").write_text("init_from = 'scratch'\n")
    launched = _config(tmp_path, RunSection(script=str(tmp_path / "train.py"),
                                            args=("--max_iters=50",), code=str(tmp_path)))
    info = RunInfo(run_id="c-20261129-101500-abcdef", cluster="c", state="stopped",
                   started=time.time(), hosts=("h0",), script=script_words(launched))
    write_run_info(launched, info)

    async def run_to_resume(config: ClusterConfig, pool: object, named: str | None) -> RunInfo:
        assert config.run.script == str(tmp_path / "train.py")  # what it looks for: a script's
        return info

    async def refuse_live(*_: object, **__: object) -> None:
        return None

    monkeypatch.setattr(controller_module, "run_to_resume", run_to_resume)
    monkeypatch.setattr(controller_module, "refuse_live", refuse_live)
    controller = controller_module.SshRunController(_config(tmp_path, RunSection()))
    edited = ("--max_iters=50", "--init_from=resume")
    handle = await controller.start(resume=info.run_id, script_args=edited)
    assert handle.config.run.args == edited and handle._state.resume
    assert handle._info.script is not None and handle._info.script[3:] == list(edited)
    with pytest.raises(UsageError, match="takes none"):
        await SshRunController(_config(tmp_path, RunSection())).start(script_args=["--x"])
