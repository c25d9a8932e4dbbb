"""A rank's failure on a path the launch folder holds but did not send is explained (a
FileNotFoundError, an OSError naming a folder, a glob found empty): every rule that left it out
and the one change that sends it."""

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


def test_every_rule_that_leaves_a_file_out_is_named_with_the_one_change(tmp_path: Path) -> None:
    _write(tmp_path, "tokens/part-0.npy")
    (tmp_path / ".corralignore").write_text("tokens/\n*.npy\n")
    said = explain_missing(tmp_path, True, ERROR.format("tokens/part-0.npy"))
    assert said == (
        f"tokens/part-0.npy is in {tmp_path} but did not travel: tokens was left out by tokens/ "
        "(.corralignore); tokens/part-0.npy was left out by *.npy (.corralignore); the lines "
        f"!/tokens/ and !/tokens/part-0.npy in {tmp_path / '.corralignore'} send it")


def test_a_model_folder_an_oserror_names_is_explained(tmp_path: Path) -> None:
    _write(tmp_path, "model/config.json")
    _write(tmp_path, "model/model.safetensors")
    (tmp_path / ".corralignore").write_text("*.safetensors\n")
    said = explain_missing(tmp_path, True, "h1 rank 1 exited with status 1 without finishing: "
                           "OSError: Error no file named model.safetensors, or "
                           "pytorch_model.bin, found in directory ./model.")
    assert said is not None and "model/model.safetensors is in" in said
    assert "*.safetensors (.corralignore)" in said and "!/model/model.safetensors" in said


def test_a_glob_a_loader_found_empty_and_an_absolute_path_inside_are_explained(
        tmp_path: Path) -> None:
    _write(tmp_path, "edu_fineweb10B/edufineweb_train_000001.npy")
    (tmp_path / ".corralignore").write_text("edu_fineweb10B/\n")
    said = explain_missing(tmp_path, True, "AssertionError: no shards in "
                           "'edu_fineweb10B/*train*'")
    assert said is not None and "left out by edu_fineweb10B/ (.corralignore)" in said
    said = explain_missing(tmp_path, True, ERROR.format(
        tmp_path / "edu_fineweb10B" / "edufineweb_train_000001.npy"))
    assert said is not None and "the line !/edu_fineweb10B/ in" in said


def test_a_file_error_naming_no_path_names_what_stayed_home(tmp_path: Path) -> None:
    _write(tmp_path, "tokens/part-0.npy")
    (tmp_path / ".corralignore").write_text("tokens/\n")
    said = explain_missing(tmp_path, True, "IndexError: list index out of range")
    assert said is not None and said.startswith("tokens (0.0 MiB) of ")
    assert "!/tokens/ at the end" in said
    assert explain_missing(tmp_path, True, "ValueError: bad batch") is None


def test_a_virtual_environment_of_any_name_is_named(tmp_path: Path) -> None:
    _write(tmp_path, "py/pyvenv.cfg")
    _write(tmp_path, "py/lib/site.txt")
    said = explain_missing(tmp_path, True, ERROR.format("py/lib/site.txt"))
    assert said is not None and "py was left out by a virtual environment" in said


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
