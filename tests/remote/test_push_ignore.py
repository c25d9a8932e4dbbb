"""A pushed script folder carries its code; its data travels by the data sync; the logs,
checkpoints and caches beside it stay home."""

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


def test_a_folder_with_logs_and_an_ignored_directory_pushes_only_the_code(tmp_path: Path) -> None:
    for rel in ("train.py", "lib/model.py", "lib/__init__.py", "configs/small.yaml",
                "train.log", "lib/debug.log", "scratch/big.bin", "scratch/notes.py",
                "checkpoints/step-10.pt", "out/checkpoint-5/model.safetensors",
                "wandb/run-1/files.txt", "__pycache__/train.cpython-312.pyc",
                ".git/HEAD", ".venv/bin/python", "venv/lib/site.py", "data/train.jsonl",
                "experiments/a.py", "experiments/b.py"):
        _write(tmp_path, rel)
    _write(tmp_path, IGNORE_FILE, "# our own\nscratch/\n/experiments/b.py\n\n")
    assert _pushed(tmp_path) == ["configs/small.yaml", "experiments/a.py", "lib/__init__.py",
                                 "lib/model.py", "train.py"]


def test_corralignore_can_push_a_default_again_and_packages_stay_code(tmp_path: Path) -> None:
    for rel in ("train.py", "data/__init__.py", "data/loaders.py", "datasets/tiny.csv",
                "outputs/keep.txt", "run.log"):
        _write(tmp_path, rel)
    assert _pushed(tmp_path) == ["data/__init__.py", "data/loaders.py", "train.py"]
    assert list(walk_tree(tmp_path).data) == ["datasets/tiny.csv"]  # data, not code
    _write(tmp_path, IGNORE_FILE, "!outputs/\n*.py\n!train.py\ndatasets/\n")
    assert _pushed(tmp_path) == ["train.py"]
    assert list(walk_tree(tmp_path).data) == ["outputs/keep.txt"]  # .corralignore: last word


def test_mingpt_and_nanogpt_data_travel_as_data_without_a_corralignore(tmp_path: Path) -> None:
    # minGPT-ddp reads data/input.txt; nanoGPT's prepare.py writes train.bin and meta.pkl,
    # which its .gitignore hides (*.bin, *.pkl): data all the same.
    for rel in ("train.py", "data/input.txt", "data/shakespeare_char/prepare.py",
                "data/shakespeare_char/train.bin", "data/shakespeare_char/meta.pkl",
                "shards/part-0.npy", "tokenizer.json", "out-shakespeare/ckpt.pt",
                "wandb/run-1/files.txt", "data/.cache/x.txt", "build/cache.bin"):
        _write(tmp_path, rel)
    _write(tmp_path, GIT_IGNORE_FILE, "*.bin\n*.pkl\nbuild/\n")
    tree = walk_tree(tmp_path)
    assert list(tree.files) == ["train.py"]
    assert list(tree.data) == ["data/input.txt", "data/shakespeare_char/meta.pkl",
                               "data/shakespeare_char/prepare.py",
                               "data/shakespeare_char/train.bin", "shards/part-0.npy",
                               "tokenizer.json"]


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
