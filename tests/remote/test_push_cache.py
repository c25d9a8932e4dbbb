"""The code cache on a host: the prune at the end of every push never fails it (a host holding
0, 7, 8, 9 or 50 trees, recent or old, takes the next push), and a tree found there is trusted
only when it is what its digest names: an edited, added or removed file or a retargeted link
makes the push send it again. The generated scripts run for real (``sh``/``bash`` against a
temporary workdir, through the local transport as a local host would)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remote.config.cluster import HostSection
from remote.config.task_code import USER_CODE_DIR
from remote.hosts.push import (
    KEEP_DAYS,
    KEEP_TREES,
    MARKER,
    build_bundle,
    code_dir,
    code_root,
    prune_command,
    push_code,
    verify_command,
)
from remote.hosts.transport import LocalTransport

DAY_S = 86_400.0


def _trees(workdir: Path, *, new: int, old: int) -> list[str]:
    """``new`` trees used in the last hours and ``old`` ones unused for twice ``KEEP_DAYS``
    days, as a push leaves them; their names, most recently used first."""
    root = Path(code_root(str(workdir)))
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    names = []
    for i in range(new + old):
        name = hashlib.sha256(f"tree {i}".encode()).hexdigest()
        (root / name).mkdir()
        (root / name / MARKER).touch()
        age = 60.0 * (i + 1) if i < new else 2 * KEEP_DAYS * DAY_S + 60.0 * i
        os.utime(root / name, (now - age, now - age))
        names.append(name)
    return names


@pytest.mark.parametrize("shell", ["sh", "bash"])
@pytest.mark.parametrize(("new", "old"), [(0, 0), (7, 0), (8, 0), (9, 0), (50, 0),
                                          (0, 9), (3, 47), (9, 9), (50, 50)])
def test_the_prune_never_fails_the_script_it_ends(tmp_path: Path, shell: str, new: int,
                                                  old: int) -> None:
    names = _trees(tmp_path, new=new, old=old)
    # As the push script runs it: under `set -e`, the last thing before the script's end.
    script = f"set -e; {prune_command(str(tmp_path))}; echo pushed"
    done = subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "pushed\n"), done.stderr
    left = {p.name for p in Path(code_root(str(tmp_path))).iterdir()}
    # The newest KEEP_TREES stay whatever their age; beyond them, only the recent ones.
    kept = set(names[:KEEP_TREES]) | {n for n in names[KEEP_TREES:new]}
    assert left == kept


def test_the_prune_of_a_workdir_without_a_cache_passes(tmp_path: Path) -> None:
    script = f"set -e; {prune_command(str(tmp_path / 'none'))}; echo pushed"
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "pushed\n")


def _local(workdir: Path) -> LocalTransport:
    return LocalTransport(HostSection(name="here", address="local", workdir=str(workdir)))


@pytest.mark.parametrize("recent", [8, 9, 50])
async def test_a_host_holding_many_recent_trees_takes_the_next_push(tmp_path: Path,
                                                                     recent: int) -> None:
    names = _trees(tmp_path, new=recent, old=0)
    bundle = build_bundle()
    assert await push_code(_local(tmp_path), bundle) is True
    assert (Path(code_dir(str(tmp_path), bundle.digest)) / MARKER).exists()
    assert await push_code(_local(tmp_path), bundle) is False  # and it is found next time
    left = {p.name for p in Path(code_root(str(tmp_path))).iterdir()}
    assert left == {*names, bundle.digest}  # recent trees are not pruned


def _user_folder(root: Path) -> Path:
    folder = root / "task"
    (folder / "lib").mkdir(parents=True)
    (folder / "train.py").write_text("import lib.real\n")
    (folder / "lib" / "real.py").write_text("X = 1\n")
    (folder / "lib" / "other.py").write_text("X = 2\n")
    (folder / "alias.py").symlink_to("lib/real.py")
    return folder


def _edit(tree: Path) -> None:
    (tree / "trainer" / "__init__.py").write_text("import os; os.system('true')\n")


def _add(tree: Path) -> None:
    (tree / "torch.py").write_text("raise SystemExit('shadowed')\n")


def _remove(tree: Path) -> None:
    (tree / USER_CODE_DIR / "lib" / "other.py").unlink()


def _retarget(tree: Path) -> None:
    link = tree / USER_CODE_DIR / "alias.py"
    link.unlink()
    link.symlink_to("lib/other.py")


def _unmark(tree: Path) -> None:
    (tree / MARKER).unlink()


@pytest.mark.parametrize("tamper", [_edit, _add, _remove, _retarget, _unmark])
async def test_a_changed_tree_is_sent_again_never_trusted(tmp_path: Path, tamper) -> None:
    bundle = build_bundle(user_folder=_user_folder(tmp_path))
    workdir = tmp_path / "host"
    assert await push_code(_local(workdir), bundle) is True
    tree = Path(code_dir(str(workdir), bundle.digest))
    check = f"{verify_command(str(workdir), bundle.digest)}; echo $?"
    assert subprocess.run(["sh", "-c", check], capture_output=True, text=True).stdout == "0\n"
    pristine = {p.relative_to(tree): (p.readlink() if p.is_symlink() else p.read_bytes())
                for p in tree.rglob("*") if not p.is_dir()}

    tamper(tree)
    assert subprocess.run(["sh", "-c", check], capture_output=True, text=True).stdout == "1\n"
    assert await push_code(_local(workdir), bundle) is True  # not "already on the host"
    assert {p.relative_to(tree): (p.readlink() if p.is_symlink() else p.read_bytes())
            for p in tree.rglob("*") if not p.is_dir()} == pristine
    assert await push_code(_local(workdir), bundle) is False
    assert [p.name for p in tree.parent.iterdir()] == [bundle.digest]  # nothing set aside left


async def test_byte_code_written_by_the_ranks_does_not_make_a_tree_stale(tmp_path: Path) -> None:
    bundle = build_bundle()
    assert await push_code(_local(tmp_path), bundle) is True
    tree = Path(code_dir(str(tmp_path), bundle.digest))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "import trainer.settings"],
                   cwd=tree, env={**env, "PYTHONPATH": str(tree)}, check=True)
    assert list(tree.rglob("__pycache__"))  # the import wrote its caches into the tree
    assert await push_code(_local(tmp_path), bundle) is False


def test_the_digest_names_every_byte_path_and_link_target(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path)
    first = build_bundle(user_folder=folder)
    assert build_bundle(user_folder=folder).digest == first.digest  # deterministic
    (folder / "alias.py").unlink()
    (folder / "alias.py").symlink_to("lib/other.py")
    retargeted = build_bundle(user_folder=folder)
    (folder / "lib" / "other.py").write_text("X = 3\n")
    edited = build_bundle(user_folder=folder)
    (folder / "lib" / "other.py").rename(folder / "lib" / "renamed.py")
    renamed = build_bundle(user_folder=folder)
    assert len({first.digest, retargeted.digest, edited.digest, renamed.digest}) == 4
