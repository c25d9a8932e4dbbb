"""A run's every output line read back from the local copy and searched: the function the
console's search and ``corral logs`` share, and the command itself."""

from __future__ import annotations

from pathlib import Path

import pytest

import console.cli as cli
from profiles.user_errors import UsageError
from remote.api import follow_log_command, load_cluster
from remote.records.culprit import culprit_line
from remote.records.log_search import (
    compile_search,
    host_log_path,
    run_log_lines,
    search_lines,
)

try:
    from recorded import info, synthetic_run, write_recorded
except ImportError:  # collected as a package
    from tests.remote.recorded import info, synthetic_run, write_recorded  # type: ignore[no-redef]

FAST_LOG = """[W1127 03:00:00.1 1 torch/distributed/run.py:1] OMP_NUM_THREADS
[rank0]:step 1 loss 2.0
[rank0]:step 2 loss 1.5
"""
SLOW_LOG = """[rank0+1]:step 1 loss 2.1
[rank0+1]:Traceback (most recent call last):
[rank0+1]:  File "train.py", line 3, in <module>
[rank0+1]:RuntimeError: CUDA out of memory
E1127 03:00:01 7 torch/distributed/elastic/api.py:9] failed (exitcode: 1) local_rank: 0
"""


def _run(root: Path) -> Path:
    """Run ``rep-f`` of two hosts, each with a launcher log in the local copy."""
    run_dir = root / "runs" / "rep-f"
    write_recorded(run_dir, info("rep-f", "failed"), [])
    for host, text in (("fast", FAST_LOG), ("slow", SLOW_LOG)):
        path = host_log_path(run_dir, host)
        path.parent.mkdir(parents=True)
        path.write_text(text, encoding="utf-8")
    return run_dir


def test_every_line_of_every_host_comes_back_with_its_rank(tmp_path: Path) -> None:
    lines = run_log_lines(_run(tmp_path), ["fast", "slow"])
    assert [line.source for line in lines] == [
        "fast:launcher", "fast:0", "fast:0", "slow:1", "slow:1", "slow:1", "slow:1",
        "slow:launcher"]
    assert lines[5].text == '  File "train.py", line 3, in <module>'  # indentation kept
    assert (lines[2].host, lines[2].number) == ("fast", 3)
    assert run_log_lines(tmp_path / "runs" / "rep-f", ["absent"]) == []


def test_a_regex_matches_over_all_ranks_and_the_source(tmp_path: Path) -> None:
    lines = run_log_lines(_run(tmp_path), ["fast", "slow"])
    assert search_lines(lines, compile_search(r"loss (1\.5|2\.1)")) == [2, 3]
    assert search_lines(lines, compile_search(r"^slow:1 .*Error")) == [6]
    assert search_lines(lines, compile_search("(?i)runtimeerror")) == [6]
    assert search_lines(lines, compile_search("nowhere")) == []


def test_the_first_failure_is_the_traceback_not_the_worker_report(tmp_path: Path) -> None:
    lines = run_log_lines(_run(tmp_path), ["fast", "slow"])
    assert culprit_line(lines) == 4
    assert culprit_line(lines[5:]) == 2  # torchrun's "failed (exitcode: 1)"
    assert culprit_line(lines[:4]) is None


def test_a_bad_regex_is_a_usage_error_naming_it() -> None:
    with pytest.raises(UsageError, match=r"--grep 'step \(' is not a regular expression"):
        compile_search("step (")


HOST_ENTRIES = ('name = "fast"\naddress = "local"',
                'name = "slow"\naddress = "10.0.0.2"\nuser = "ann"\nport = 2222')
"""A local host and one reached over SSH (its follow command is ``ssh``)."""


def _cluster(root: Path) -> Path:
    """cluster.toml of run ``rep-f``'s two hosts, runs under ``root/runs``."""
    path = root / "cluster.toml"
    path.write_text(f'[cluster]\nname = "rep"\nmaster = "fast"\nmaster_addr = "10.0.0.1"\n'
                    f'run_root = "{root / "runs"}"\n'
                    + "".join(f"[[hosts]]\n{entry}\n" for entry in HOST_ENTRIES),
                    encoding="utf-8")
    return path


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    """cluster.toml of run ``rep-f``, recorded with both hosts' logs."""
    _run(tmp_path)
    return _cluster(tmp_path)


def _logs(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, str]:
    code = cli.main(["-c", str(path), "logs", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_corral_logs_greps_one_host_or_all(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, tmp_path = cluster, cluster.parent
    code, out = _logs(capsys, path, "rep-f", "--grep", "loss 2")
    assert (code, out.splitlines()) == (0, ["fast:0 step 1 loss 2.0", "slow:1 step 1 loss 2.1"])
    code, out = _logs(capsys, path, "rep-f", "--host", "fast")
    assert code == 0 and len(out.splitlines()) == 3 and "slow:" not in out
    code, out = _logs(capsys, path, "--failure")  # the newest run by default
    assert code == 0
    assert out.splitlines()[0] == "slow:1 Traceback (most recent call last):"
    code, out = _logs(capsys, path, "rep-f", "--grep", "nowhere")
    assert code == 1 and out.startswith("no match: --grep 'nowhere' matched none of the 8 "
                                        "lines of run rep-f on fast, slow")
    assert "host:rank text" in out  # what was searched
    code, out = _logs(capsys, path, "rep-f", "--host", "fast", "--failure")
    assert code == 1 and "no match: no traceback or failed worker in the 3 lines" in out
    host_log_path(tmp_path / "runs" / "rep-f", "slow").unlink()
    code, out = _logs(capsys, path, "rep-f", "--host", "slow")
    assert code == 1 and "no log lines of run rep-f on slow copied here (yet)" in out


def test_corral_logs_refuses_a_bad_regex_or_host_without_a_traceback(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _logs(capsys, cluster, "rep-f", "--grep", "loss [")
    assert code == 2
    assert "--grep 'loss [' is not a regular expression" in out
    assert "Traceback" not in out
    code, out = _logs(capsys, cluster, "rep-f", "--host", "gamma")
    assert code == 2 and "--host gamma: not a host of run rep-f" in out


def test_the_follow_command_is_ssh_tail_quoted(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _logs(capsys, cluster, "rep-f", "--follow-command")
    root = cluster.parent / "runs" / "rep-f"
    assert code == 0
    assert out.splitlines() == [
        f"tail -F {root}/logs/fast/launcher.log",
        f"ssh -p 2222 ann@10.0.0.2 'tail -F {root}/logs/slow/launcher.log'"]
    config = load_cluster(cluster)
    with pytest.raises(UsageError, match="no host 'gamma'"):
        follow_log_command(config, "rep-f", "gamma")


def test_corral_logs_failure_opens_the_culprit_and_names_the_collateral(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = cluster.parent / "runs" / "rep-f"
    write_recorded(run_dir, info("rep-f", "failed"),
                   synthetic_run(steps=4, end="failed", error="CUDA out of memory"))
    path = host_log_path(run_dir, "fast")  # rank 0 failed after slow rank 1, in host order first
    path.write_text(FAST_LOG + "[rank0]:Traceback (most recent call last):\n[rank0]:RuntimeError:"
                    " [gloo/transport/tcp/pair.cc:534] Connection closed by peer\n",
                    encoding="utf-8")
    cli.main(["-c", str(cluster), "logs", "rep-f", "--failure"])
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "slow:1 Traceback (most recent call last):"
    assert "fast:0" not in captured.out  # the victim's error is not the story's start
    assert captured.err.strip() == (
        "first failure: slow:1 line 2; collateral (they followed from it): fast:0")


def test_the_report_names_the_recorded_culprit_and_the_victims_as_collateral(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = cluster.parent / "runs" / "rep-f"  # fast rank 0 killed: it logged nothing, no end
    write_recorded(run_dir, info("rep-f", "failed",
                                 detail="fast rank 0 was killed (SIGKILL, status 137)"),
                   synthetic_run(steps=4, end="failed", error="Connection closed by peer"))
    code = cli.main(["-c", str(cluster), "report", "rep-f"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "First failure: rank 0 on fast: fast rank 0 was killed (SIGKILL, status 137)" in out
    assert ("Collateral (they followed from it): rank 1 on slow: Connection closed by peer"
            in out)
