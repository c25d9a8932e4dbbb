"""A task file or script that cannot be used is headed by its own name, not "cluster.toml is
invalid": the fix is in the user's file (or in the path to it), and the heading says which."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from console.cli import main
from remote.config.errors import ConfigError
from remote.config.read import load_cluster, parse_cluster

HEAD = '[cluster]\nname = "c"\n[[hosts]]\nname = "a"\naddress = "local"\n'


def _error(tmp_path: Path, run: str, *, name: str = "cluster.toml") -> ConfigError:
    (tmp_path / "broken.py").write_text("import os\ndef main(:\n    pass\n")
    with pytest.raises(ConfigError) as caught:
        parse_cluster(HEAD + "[run]\n" + run, path=tmp_path / name)
    return caught.value


def test_a_missing_task_file_is_headed_by_its_name(tmp_path: Path) -> None:
    error = _error(tmp_path, 'task = "mytask.py:build"')
    assert error.title == "task file mytask.py cannot be used"
    assert str(error) == (f"{tmp_path / 'cluster.toml'}: [run] task: task file "
                          f"{tmp_path / 'mytask.py'} does not exist (a path in [run] task is "
                          "relative to the folder of cluster.toml)")


def test_a_script_that_does_not_parse_is_headed_by_its_name_and_line(tmp_path: Path) -> None:
    error = _error(tmp_path, 'script = "broken.py"')
    assert error.title == "script file broken.py cannot be used"
    assert str(error).startswith(f"{tmp_path / 'broken.py'}:2: syntax error")
    assert "cluster.toml" not in str(error)  # cluster.toml is not what needs the fix


def test_with_other_problems_the_file_is_named_among_them(tmp_path: Path) -> None:
    # a config changed in code (as --script does) is checked again, all problems together
    config = parse_cluster(HEAD, path=tmp_path / "my.toml")
    with pytest.raises(ConfigError) as caught:
        replace(config, hosts=(), run=replace(config.run, task="mytask.py:build"))
    assert caught.value.title == "my.toml is invalid"
    lines = str(caught.value).splitlines()
    assert lines[0] == "2 problems" and "[[hosts]]: no hosts" in lines[1]
    assert "[run] task: task file" in lines[2] and "mytask.py does not exist" in lines[2]


def test_corral_check_prints_the_files_name_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.py").write_text("def build(options:\n    pass\n")
    path = tmp_path / "cluster.toml"
    path.write_text(HEAD + '[run]\nscript = "broken.py"\n')
    assert main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("corral: script file broken.py cannot be used: ") and "\n" not in err
    with pytest.raises(ConfigError, match="syntax error"):
        load_cluster(path)
