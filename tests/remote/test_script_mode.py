"""Script mode before and around the launch, in-process: a user's script and its arguments
checked before anything starts (one line naming the user's own file and the fix), the command
and environment torchrun starts it with, and how an attempt whose ranks finished but linger
ends."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import pytest

from console.run_cli import run_session
from profiles.user_errors import UsageError
from remote.checks.plan import HostPlan
from remote.config.cluster import ClusterConfig
from remote.config.errors import ConfigError
from remote.config.read import parse_cluster
from remote.config.task_code import user_code
from remote.run.launch import SCRIPT_MAIN, LaunchPlan, launcher_command
from remote.run.monitor import RunMonitor
from trainer.integrations.contract import RESTART_ENV, RUN_DIR_ENV, ScriptSettings

try:
    from test_run_monitor import _end, _exit, _log, _start
except ImportError:  # collected as a package
    from tests.remote.test_run_monitor import _end, _exit, _log, _start  # type: ignore[no-redef]

HEAD = ('[cluster]\nname = "s"\n[[hosts]]\nname = "a"\naddress = "local"\nslowdown = 2.0\n'
        'threads = 3\n')


def _config(tmp_path: Path, run: str) -> ClusterConfig:
    return parse_cluster(HEAD + "[run]\n" + run, path=tmp_path / "cluster.toml")


def _problem(tmp_path: Path, run: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, run)
    lines = str(caught.value).strip().splitlines()
    assert len(lines) == 1, lines  # one problem, one line
    return lines[0]


@pytest.mark.parametrize(("run", "needle"), [
    ('script = "nope.py"', "nope.py does not exist"),
    ('script = "folder"', "folder is not a file; name the Python file itself"),
    ('script = "broken.py"', "broken.py:2: syntax error"),
    ('script = "train.py"\nargs = "--lr 1"', "[run] args: expected an array of strings"),
    ('script = "train.py"\nargs = ["--steps", 3]', "element 1 is an integer"),
    ('script = "train.py"\ntask = "causal_lm"', "leave out task = 'causal_lm'"),
])
def test_a_bad_script_or_args_is_one_line_before_anything_starts(
        tmp_path: Path, run: str, needle: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "broken.py").write_text("import os\ndef main(:\n    pass\n")
    (tmp_path / "train.py").write_text("print('hi')\n")
    line = _problem(tmp_path, run)
    assert needle in line, line
    if "broken" in run:  # the user's own file and line, not a pushed copy nor cluster.toml
        assert line.startswith(f"{tmp_path / 'broken.py'}:2:"), line
    else:
        assert "cluster.toml" in line, line


async def test_corral_check_reports_a_package_imported_inside_main_as_optional(
        tmp_path: Path) -> None:
    from remote.checks.preflight import check_cluster
    from remote.hosts.pool import HostPool

    (tmp_path / "train.py").write_text(
        "import torch\n\ndef main():\n    import surely_not_a_package_here\n\n"
        "if __name__ == '__main__':\n    main()\n")
    config = parse_cluster(
        HEAD.replace('name = "s"\n', f'name = "s"\nrun_root = "{tmp_path}/runs"\n')
        + f'python = "{sys.executable}"\nworkdir = "{tmp_path}/work"\n[run]\n'
        'script = "train.py"\n', path=tmp_path / "cluster.toml")
    pool = HostPool(config)
    try:
        report = await check_cluster(config, pool)
    finally:
        await pool.aclose()
    [item, found] = [i for i in report.items if i.name == "imports"]
    assert found.ok and "found by" in found.detail  # torch
    assert item.ok and item.detail.startswith("warning: optional"), item  # never blocks
    assert "surely_not_a_package_here (inside a function, train.py:4)" in item.detail


def _command(config: ClusterConfig, **plan: object) -> str:
    launch = LaunchPlan(run_id="s-1", run_dir="~/runs/s-1", code_digest="d" * 64,
                        master_addr="127.0.0.1", port=29500, nnodes=1,
                        user=user_code(config.run, config.path.parent), **plan)  # type: ignore[arg-type]
    place = HostPlan(host=config.hosts[0], node_rank=0, first_rank=0, nproc=1, device="cpu",
                     gpus=0, visible_devices=None, interface="lo", local_addr=None)
    return launcher_command(config, launch, place)


def test_torchrun_starts_the_pushed_script_with_its_args_and_corrals_environment(
        tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    config = _config(tmp_path, 'script = "train.py"\nargs = ["--out", "a b", "$(touch x)"]\n'
                               'policy = "static"\nsplit = [3]\nglobal_batch = 3\n')
    words = shlex.split(_command(config).rsplit("; s=$?", 1)[0])
    script_at = words.index("train.py")  # relative to the host's working directory
    assert words[script_at + 1:] == ["--out", "a b", "$(touch x)"]  # each one word, inert
    # torchrun starts the script through script_main, its command line naming the run dir
    # and the host's own working directory inside it
    assert words[script_at - 6:script_at] == ["-m", SCRIPT_MAIN, "--run-dir", "$HOME/runs/s-1",
                                              "--cwd", "$HOME/runs/s-1/cwd/a"]
    assert "trainer" not in words
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    told = ScriptSettings.from_env({**env, RUN_DIR_ENV: "/runs/s-1"})
    assert told == ScriptSettings(run_dir="/runs/s-1", restart=0, policy="static", split=(3,),
                                  rebalance_every=10, slowdown=(2.0,), backend="gloo",
                                  device="cpu", hang_limit=300.0)
    assert env["GLOO_SOCKET_IFNAME"] == "lo" and env["OMP_NUM_THREADS"] == "3"


def test_a_restart_tells_the_script_it_is_one(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    config = _config(tmp_path, 'script = "train.py"\n')
    assert f"{RESTART_ENV}=1 " in _command(config, restart=1)
    assert f"{RESTART_ENV}=1 " in _command(config, resume=True)  # corral run --resume
    assert f"{RESTART_ENV}=0 " in _command(config)


def test_run_script_on_the_command_line_replaces_run_script_and_args(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cluster.toml").write_text(HEAD)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "train.py").write_text("print('hi')\n")
    monkeypatch.chdir(tmp_path / "mine")
    args = argparse.Namespace(config=tmp_path / "cluster.toml", script=Path("train.py"),
                              script_args=["--lr", "1e-4"])
    run = run_session(args).config.run
    assert (run.script, run.args) == (str(tmp_path / "mine" / "train.py"), ("--lr", "1e-4"))
    with pytest.raises(UsageError, match="name it with --script FILE"):
        run_session(argparse.Namespace(config=tmp_path / "cluster.toml", script=None,
                                       script_args=["--lr", "1"]))


def test_finished_ranks_that_linger_are_ended_and_the_run_completed() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    for item in (_start("a", 0), _start("b", 1), _end("a", 0, "completed"), _exit("a", "0")):
        monitor.observe(item)
    assert not monitor.all_completed  # rank 1 has not finished yet
    monitor.observe(_end("b", 1, "completed"))
    assert monitor.all_completed and not monitor.finished
    monitor.end_lingering(60.0)
    monitor.observe(_exit("b", "stopped"))  # corral's stop of the lingering processes
    final = monitor.finding()
    assert final.state == "completed" and "had not exited 60 s later" in final.detail


def test_a_crashed_ranks_traceback_names_what_it_died_of() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    for item in (_start("a", 0), _start("b", 1), _exit("a", "0")):
        monitor.observe(item)
    for text in ("Traceback (most recent call last):", '  File "train.py", line 9, in <module>',
                 "    raise ValueError('bad batch')", "[rank1]: ValueError: bad batch"):
        monitor.observe(_log("b", text, rank=1))
    for line in ("Root Cause (first observed failure):", "  rank      : 1 (local_rank: 0)",
                 "  exitcode  : 1 (pid: 42)"):
        monitor.observe(_log("b", line))
    monitor.observe(_exit("b", "1"))
    final = monitor.finding()
    assert (final.state, final.failed_host, final.failed_rank) == ("failed", "b", 1)
    assert final.detail.splitlines()[0] == ("b rank 1 exited with status 1 without finishing: "
                                            "ValueError: bad batch")


def test_a_rank_aborting_in_its_teardown_after_it_finished_still_completes() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    for item in (_start("a", 0), _start("b", 1), _end("a", 0, "completed"),
                 _end("b", 1, "completed"), _exit("a", "0"),
                 _log("b", "[rank1]: terminate called without an active exception", rank=1)):
        monitor.observe(item)
    for line in ("Root Cause (first observed failure):", "  rank      : 1 (local_rank: 0)",
                 "  exitcode  : -6 (pid: 42)"):
        monitor.observe(_log("b", line))
    monitor.observe(_exit("b", "1"))
    final = monitor.finding()
    assert final.state == "completed", final
    assert "b rank 1 was killed by signal 6 after it finished" in final.detail


def test_a_rank_failing_with_an_error_after_its_end_is_still_a_failure() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a",))
    for item in (_start("a", 0), _end("a", 0, "completed"),
                 _log("a", "[rank0]: OSError: No space left on device", rank=0)):
        monitor.observe(item)
    for line in ("  rank      : 0 (local_rank: 0)", "  exitcode  : 1 (pid: 42)"):
        monitor.observe(_log("a", line))
    monitor.observe(_exit("a", "1"))
    assert monitor.finding().state == "failed"  # e.g. saving the model after training
