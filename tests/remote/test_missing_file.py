"""A rank's FileNotFoundError on a relative path the launch folder holds but did not send is
explained: the rule that left it out and the line that sends it."""

from __future__ import annotations

from pathlib import Path

from remote.hosts.missing_file import explain_missing

ERROR = "h1 rank 1 exited with status 1 without finishing: FileNotFoundError: [Errno 2] " \
        "No such file or directory: '{}'"


def _write(folder: Path, rel: str) -> None:
    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    (folder / rel).write_text("x")


def test_a_file_left_out_by_corralignore_names_the_rule_and_the_line(tmp_path: Path) -> None:
    _write(tmp_path, "data/input.txt")
    (tmp_path / ".corralignore").write_text("data/\n")
    assert explain_missing(tmp_path, True, ERROR.format("data/input.txt")) == (
        f"data/input.txt is in {tmp_path} but did not travel: data was left out by data/ "
        f"(.corralignore); the line !/data/ in {tmp_path / '.corralignore'} sends it")


def test_a_gitignored_config_and_an_output_folder_are_named(tmp_path: Path) -> None:
    _write(tmp_path, "configs/local.yaml")
    _write(tmp_path, "out/prev/ckpt.yaml")
    (tmp_path / ".gitignore").write_text("configs/local.yaml\n")
    said = explain_missing(tmp_path, True, ERROR.format("configs/local.yaml"))
    assert said is not None and "left out by /configs/local.yaml (.gitignore)" in said
    assert "!/configs/local.yaml in" in said
    said = explain_missing(tmp_path, True, ERROR.format("out/prev/ckpt.yaml"))
    assert said is not None and "out was left out by out/ (corral's defaults)" in said


def test_data_off_and_a_link_out_of_the_folder_say_what_to_set(tmp_path: Path) -> None:
    _write(tmp_path, "data/input.txt")
    said = explain_missing(tmp_path, False, ERROR.format("data/input.txt"))
    assert said is not None and "[run] data = false" in said
    (tmp_path / "elsewhere").mkdir()
    _write(tmp_path / "elsewhere", "ds/shard.npy")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "fineweb").symlink_to(tmp_path / "elsewhere" / "ds")
    said = explain_missing(repo, True, ERROR.format("fineweb/shard.npy"))
    assert said is not None and 'data = ["fineweb"]' in said


def test_nothing_is_said_of_what_travelled_or_what_the_folder_lacks(tmp_path: Path) -> None:
    _write(tmp_path, "data/input.txt")
    assert explain_missing(tmp_path, True, ERROR.format("data/input.txt")) is None
    assert explain_missing(tmp_path, True, ERROR.format("data/other.txt")) is None
    assert explain_missing(tmp_path, True, ERROR.format("/etc/nothing")) is None
    assert explain_missing(tmp_path, True, "ValueError: bad batch") is None
