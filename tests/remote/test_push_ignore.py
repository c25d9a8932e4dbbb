"""A pushed script folder carries its code, not the logs, checkpoints and data beside it."""

from __future__ import annotations

from pathlib import Path

from remote.config.task_code import USER_CODE_DIR
from remote.hosts.push import build_bundle, folder_files
from remote.hosts.push_ignore import IGNORE_FILE


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
    _write(tmp_path, IGNORE_FILE, "!datasets/\n*.py\n!train.py\n")
    assert _pushed(tmp_path) == ["datasets/tiny.csv", "train.py"]


def test_what_is_left_out_does_not_change_the_digest(tmp_path: Path) -> None:
    _write(tmp_path, "train.py")
    first = build_bundle(user_folder=tmp_path).digest
    _write(tmp_path, "train.log", "step 1\n")
    _write(tmp_path, "checkpoints/last.pt", "weights")
    assert build_bundle(user_folder=tmp_path).digest == first
    _write(tmp_path, "train.py", "print(1)\n")
    assert build_bundle(user_folder=tmp_path).digest != first
