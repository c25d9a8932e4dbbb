"""``corral init``: a cluster.toml to start from, never over an existing file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

import console.cli as cli
from remote.checks.script_imports import script_keys_items
from remote.config.init import demo_toml
from remote.config.read import load_cluster
from remote.config.script_keys import ignored_keys_line

ROOT = Path(__file__).resolve().parents[2]


class Done(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def corral_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> Callable[..., Done]:
    """``corral ARGS`` in this process, from ``tmp_path`` (also ``$HOME``): exit code and output.

    For what exits before anything starts; ``_corral`` is the real command for the rest."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))

    def corral(*args: str) -> Done:
        code = cli.main(list(args))
        out = capsys.readouterr()
        return Done(code, out.out, out.err)

    return corral


def test_the_repositorys_cluster_toml_is_the_demo_init_writes() -> None:
    assert (ROOT / "cluster.toml").read_text(encoding="utf-8") == demo_toml()


def test_init_never_overwrites_a_file(tmp_path: Path, corral_in: Callable[..., Done]) -> None:
    mine = tmp_path / "cluster.toml"
    mine.write_text("# my own cluster\n", encoding="utf-8")
    done = corral_in("init", "--hosts", "gpu1")
    assert done.returncode == 2
    assert "never overwrites" in done.stderr and "Traceback" not in done.stderr
    assert mine.read_text(encoding="utf-8") == "# my own cluster\n"


def test_init_with_hosts_writes_one_entry_per_alias_left_to_detection(
    tmp_path: Path, corral_in: Callable[..., Done]
) -> None:
    done = corral_in("-c", "lab.toml", "init", "--hosts", "gpu1,my laptop.x")
    assert done.returncode == 2 and "bad --hosts" in done.stderr  # an alias is one word
    done = corral_in("-c", "lab.toml", "init", "--hosts", "gpu1,lap@top.x")
    assert done.returncode == 0, done.stderr
    config = load_cluster(tmp_path / "lab.toml")
    assert [(h.name, h.address) for h in config.hosts] == [("gpu1", "gpu1"),
                                                           ("lap-top.x", "lap@top.x")]
    assert config.cluster.master == "gpu1"
    assert all(h.gpus == "auto" and h.nproc is None and h.python is None for h in config.hosts)


def test_a_missing_file_says_how_to_start(corral_in: Callable[..., Done]) -> None:
    done = corral_in("check")
    assert done.returncode == 2
    assert "start from the repository's cluster.toml" in done.stderr
    assert "corral init" in done.stderr and "corral init --script train.py" in done.stderr


def test_init_with_a_script_writes_a_run_of_it_that_warns_of_no_task_key(
    tmp_path: Path, corral_in: Callable[..., Done]
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('training')\n", encoding="utf-8")
    done = corral_in("init", "--script", "src/train.py")
    assert done.returncode == 0, done.stderr
    assert "your script src/train.py on this machine" in done.stdout
    config = load_cluster(tmp_path / "cluster.toml")
    assert config.run.script == "src/train.py" and config.run.args == ()
    assert [(h.name, h.address) for h in config.hosts] == [("local", "local")]
    assert ignored_keys_line(config.run) is None  # every script run warned of task keys
    assert script_keys_items(config) == []
    done = corral_in("-c", "lab.toml", "init", "--script", "src/train.py", "--hosts", "gpu1,gpu2")
    assert done.returncode == 0, done.stderr
    config = load_cluster(tmp_path / "lab.toml")
    assert [h.address for h in config.hosts] == ["gpu1", "gpu2"]
    assert config.run.script == "src/train.py" and ignored_keys_line(config.run) is None


def test_init_and_run_name_a_missing_script_as_the_option_not_as_run_script(
    tmp_path: Path, corral_in: Callable[..., Done]
) -> None:
    (tmp_path / "folder").mkdir()
    for args in (("init", "--script", "nope.py"), ("init", "--script", "folder"),
                 ("run", "--script", "nope.py"), ("run", "--dry-run", "--script", "nope.py")):
        if args[0] == "run":  # a cluster.toml that is fine: only the option is wrong
            (tmp_path / "cluster.toml").write_text(demo_toml(), encoding="utf-8")
        done = corral_in(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert f"--script {args[-1]}: " in done.stderr, done.stderr
        assert "[run] script" not in done.stderr and "Traceback" not in done.stderr
        assert ("not a file" if args[-1] == "folder" else "no such file") in done.stderr
        if args[0] == "init":
            assert not (tmp_path / "cluster.toml").exists()  # nothing written


@pytest.mark.parametrize("how", [("--hosts", "local,local,local"), ("--local", "3")])
def test_init_with_three_local_hosts_shares_this_machines_cores_out(
    tmp_path: Path, corral_in: Callable[..., Done], how: tuple[str, str]
) -> None:
    """Three ranks on one machine: each gets the machine's cores ÷ 3 threads (at least 1),
    as torchrun's OMP_NUM_THREADS=1 would, never one thread per core each."""
    import os

    (tmp_path / "train.py").write_text("print('training')\n", encoding="utf-8")
    done = corral_in("init", "--script", "train.py", *how)
    assert done.returncode == 0, done.stderr
    config = load_cluster(tmp_path / "cluster.toml")
    assert [(h.name, h.address) for h in config.hosts] == [
        ("local0", "local"), ("local1", "local"), ("local2", "local")]
    cores = len(os.sched_getaffinity(0))
    assert {h.threads for h in config.hosts} == {max(1, cores // 3)}
    assert config.run.script == "train.py"


def test_init_local_takes_a_positive_count(corral_in: Callable[..., Done]) -> None:
    done = corral_in("init", "--local", "0")
    assert done.returncode == 2 and "--local takes a number" in done.stderr + done.stdout
