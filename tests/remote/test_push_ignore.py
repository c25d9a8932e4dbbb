"""A pushed script folder carries its code; everything else of it travels by the data sync
(data, checkpoints, weights, gitignored shards, large files); version control, virtual
environments, bytecode, tool caches and what .corralignore says stay home."""

from __future__ import annotations

from pathlib import Path

from remote.config.task_code import USER_CODE_DIR
from remote.hosts.push import build_bundle, folder_files
from remote.hosts.push_ignore import GIT_IGNORE_FILE, IGNORE_FILE
from remote.hosts.push_tree import walk_tree


def _write(folder: Path, rel: str, text: str = "x\n") -> None:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _pushed(folder: Path) -> list[str]:
    return [rel.removeprefix(f"{USER_CODE_DIR}/") for rel, _ in folder_files(folder, USER_CODE_DIR)]


def test_every_file_travels_but_vcs_venvs_bytecode_caches_and_corralignore(
        tmp_path: Path) -> None:
    # torchrun on a shared disk shows the script every file: so does corral, code or data.
    for rel in ("train.py", "lib/model.py", "lib/__init__.py", "configs/small.yaml",
                "train.log", "lib/debug.log", "scratch/big.bin", "scratch/notes.py",
                "checkpoints/step-10.pt", "out/checkpoint-5/model.safetensors",
                "wandb/run-1/files.txt", "__pycache__/train.cpython-312.pyc",
                ".git/HEAD", ".venv/bin/python", "venv/lib/site.py", "data/train.jsonl",
                "myenv/pyvenv.cfg", "myenv/lib/x.py", ".pytest_cache/v", ".env",
                "experiments/a.py", "experiments/b.py"):
        _write(tmp_path, rel)
    _write(tmp_path, IGNORE_FILE, "# our own\nscratch/\n/experiments/b.py\n\n")
    tree = walk_tree(tmp_path)
    assert _pushed(tmp_path) == [".corralignore", ".env", "configs/small.yaml",
                                 "experiments/a.py", "lib/__init__.py", "lib/model.py",
                                 "train.py"]
    assert list(tree.data) == ["checkpoints/step-10.pt", "data/train.jsonl", "lib/debug.log",
                               "out/checkpoint-5/model.safetensors", "train.log",
                               "wandb/run-1/files.txt"]
    assert tree.home == {"experiments/b.py": 2, "scratch": 4}  # listed with sizes


def test_corralignore_can_push_a_default_again_and_packages_stay_code(tmp_path: Path) -> None:
    for rel in ("train.py", "data/__init__.py", "data/loaders.py", "datasets/tiny.csv",
                "outputs/keep.txt", "run.log", ".git/HEAD"):
        _write(tmp_path, rel)
    assert _pushed(tmp_path) == ["data/__init__.py", "data/loaders.py", "train.py"]
    assert list(walk_tree(tmp_path).data) == ["datasets/tiny.csv", "outputs/keep.txt",
                                              "run.log"]  # data, not code
    _write(tmp_path, IGNORE_FILE, "!.git/\n*.py\n!train.py\ndatasets/\n*.log\n")
    assert _pushed(tmp_path) == [".corralignore", ".git/HEAD", "train.py"]
    assert list(walk_tree(tmp_path).data) == ["outputs/keep.txt"]  # .corralignore: last word


def test_gitignored_shards_of_any_folder_name_and_large_files_travel_as_data(
        tmp_path: Path) -> None:
    # nanoGPT's prepare.py writes train.bin and meta.pkl, which its .gitignore hides;
    # build-nanogpt's edu_fineweb10B/ and a tokens/ folder are gitignored under other names.
    for rel in ("train.py", "data/input.txt", "data/shakespeare_char/prepare.py",
                "data/shakespeare_char/train.bin", "data/shakespeare_char/meta.pkl",
                "shards/part-0.npy", "tokenizer.json", "out-shakespeare/ckpt.pt",
                "tokens/part-0", "edu_fineweb10B/edufineweb_train_000001",
                "model/config.json", "model/model.safetensors", "build/cache.bin"):
        _write(tmp_path, rel)
    with (tmp_path / "weights.onnx").open("wb") as sparse:  # large: by the data sync
        sparse.truncate(2 * 2**20)
    _write(tmp_path, GIT_IGNORE_FILE, "*.bin\n*.pkl\nbuild/\ntokens/\nedu_fineweb10B/\n")
    tree = walk_tree(tmp_path)
    assert list(tree.files) == [GIT_IGNORE_FILE, "model/config.json", "train.py"]
    assert list(tree.data) == [
        "build/cache.bin", "data/input.txt", "data/shakespeare_char/meta.pkl",
        "data/shakespeare_char/prepare.py", "data/shakespeare_char/train.bin",
        "edu_fineweb10B/edufineweb_train_000001", "model/model.safetensors",
        "out-shakespeare/ckpt.pt", "shards/part-0.npy", "tokenizer.json", "tokens/part-0",
        "weights.onnx"]


def test_what_is_left_out_does_not_change_the_digest(tmp_path: Path) -> None:
    _write(tmp_path, "train.py")
    first = build_bundle(user_folder=tmp_path).digest
    _write(tmp_path, "train.log", "step 1\n")
    _write(tmp_path, "checkpoints/last.pt", "weights")
    assert build_bundle(user_folder=tmp_path).digest == first
    _write(tmp_path, "train.py", "print(1)\n")
    assert build_bundle(user_folder=tmp_path).digest != first


def test_a_task_folder_keeps_its_data_in_the_tree_a_script_folder_sends_it_apart(
        tmp_path: Path) -> None:
    # A task (or a pod) has no data sync: its data files ride in the code tree, as before.
    for rel in ("task.py", "vocab.txt", "data/rows.jsonl"):
        _write(tmp_path, rel)
    task = build_bundle(user_folder=tmp_path, with_data=True)
    script = build_bundle(user_folder=tmp_path)
    assert _pushed(tmp_path) == ["task.py"]  # a script's: vocab.txt and data/ are data
    assert task.files == script.files + 2 and task.digest != script.digest
