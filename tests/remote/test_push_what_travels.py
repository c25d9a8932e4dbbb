"""Only what the user meant travels: a link out of the pushed folder (to a file elsewhere, to a
secret-looking key) is never followed and is named, a link inside it travels as a link, a FIFO
is skipped without blocking the walk, and a 2 GB file beside the script is refused by the size
budget before any byte is read, named with the fix. Hosts sharing one code cache push the
same tree at once and it lands whole."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from profiles.user_errors import UsageError
from remote.config.task_code import USER_CODE_DIR
from remote.hosts.push import build_bundle
from remote.hosts.push_tree import PUSH_BUDGET_BYTES, left_out_line, walk_tree


def _members(folder: Path) -> dict[str, tarfile.TarInfo]:
    bundle = build_bundle(user_folder=folder)
    with tarfile.open(fileobj=io.BytesIO(bundle.tar)) as tar:
        return {m.name.removeprefix(f"{USER_CODE_DIR}/"): m for m in tar.getmembers()
                if m.name.startswith(f"{USER_CODE_DIR}/")}


def test_links_out_of_the_folder_are_never_followed_and_are_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    secret = home / ".ssh" / "id_ed25519"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot for the hosts\n")
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("outside bytes\n")
    train = tmp_path / "train"
    (train / "lib").mkdir(parents=True)
    (train / "train.py").write_text("print('hi')\n")
    (train / "lib" / "real.py").write_text("X = 1\n")
    (train / "key").symlink_to(secret)
    (train / "notes.txt").symlink_to(elsewhere)
    (train / "shadow").symlink_to("/etc/shadow")
    (train / "alias.py").symlink_to("lib/real.py")  # inside: travels as a link
    (train / "dangling").symlink_to(train / "gone")

    members = _members(train)
    assert sorted(members) == ["alias.py", "lib/real.py", "train.py"]
    assert members["alias.py"].issym() and members["alias.py"].linkname == "lib/real.py"
    bundle = build_bundle(user_folder=train)
    assert b"not for the hosts" not in bundle.tar and b"outside bytes" not in bundle.tar
    line = left_out_line(walk_tree(train))
    assert line is not None
    for name in ("key", "notes.txt", "shadow", "dangling"):
        assert f"{name} (a link to " in line, line
    assert str(secret) in line


def test_a_link_left_out_is_called_outside_only_when_its_target_is(tmp_path: Path) -> None:
    train = tmp_path / "train"
    train.mkdir()
    (train / "train.py").write_text("print('hi')\n")
    (train / "dangling").symlink_to("missing.txt")  # inside the folder, no such file
    (train / "self").symlink_to(".")
    (train / "loop").symlink_to("loop")
    (train / "away").symlink_to(tmp_path)
    said = walk_tree(train).left_out
    assert said == {"dangling": "a link to missing.txt, which does not exist (a broken link)",
                    "self": "a link to ., the folder itself (never followed)",
                    "loop": "a link to loop, a loop of links (never followed)",
                    "away": f"a link to {tmp_path}, outside the folder (never followed)"}


def test_a_cluster_file_with_every_hosts_env_stays_on_this_machine(tmp_path: Path) -> None:
    """A script run's folder holds its cluster.toml, and that file holds every host's ``env``:
    pushed, one host's token would land on every other host's disk."""
    train = tmp_path / "train"
    (train / "configs").mkdir(parents=True)
    (train / "train.py").write_text("print('hi')\n")
    (train / "cluster.toml").write_text(
        '[cluster]\nname = "lab"\n\n[[hosts]]\nname = "a"\naddress = "local"\n'
        'env = { HF_TOKEN = "hf_secret" }\n')
    (train / "configs" / "lab-2.toml").write_text('[[ hosts ]]\nname = "b"\n')  # another one
    (train / "configs" / "model.toml").write_text('[model]\nwidth = 8\n')  # the script's own
    members = _members(train)
    assert "cluster.toml" not in members and "configs/lab-2.toml" not in members
    assert {"train.py", "configs/model.toml"} <= set(members)
    left = walk_tree(train).left_out
    assert set(left) == {"cluster.toml", "configs/lab-2.toml"}
    assert "stays on this machine" in left["cluster.toml"]


def test_a_fifo_is_skipped_and_named_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    os.mkfifo(tmp_path / "pipe")
    started = time.monotonic()
    assert sorted(_members(tmp_path)) == ["train.py"]  # opening the FIFO would block for ever
    assert time.monotonic() - started < 30
    assert left_out_line(walk_tree(tmp_path)) == "not pushed: pipe (a FIFO)"


def test_a_folder_of_code_over_the_budget_is_refused_naming_the_largest(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    for i in range(70):  # 1 MiB each, code by name and size: 70 MiB of code
        with (tmp_path / f"gen_{i:02}.py").open("wb") as sparse:
            sparse.truncate(2**20)
    with (tmp_path / "big.onnx").open("wb") as sparse:  # 2 GB: data, not code
        sparse.truncate(2 * 2**30)
    with pytest.raises(UsageError) as refused:
        build_bundle(user_folder=tmp_path)
    message = refused.value.message
    assert "gen_00.py (1.0 MiB)" in message and f"{PUSH_BUDGET_BYTES // 2**20}.0 MiB" in message
    assert ".corralignore" in message and "big.onnx" not in message


async def test_a_push_prunes_old_unused_trees_and_keeps_the_recent_ones(tmp_path: Path) -> None:
    from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
    from remote.hosts.pool import HostPool
    from remote.hosts.push import KEEP_DAYS, KEEP_TREES, MARKER, code_root, push_code

    workdir = tmp_path / "work"
    cache = Path(code_root(str(workdir)))
    cache.mkdir(parents=True)
    old = time.time() - (KEEP_DAYS + 1) * 86400
    trees = [cache / f"{i:064x}" for i in range(KEEP_TREES + 3)]
    for age, tree in enumerate(trees):  # trees[0] the most recently used
        tree.mkdir()
        (tree / MARKER).touch()
        stamp = old - age if age >= KEEP_TREES - 1 else time.time() - age
        os.utime(tree, (stamp, stamp))
    (tmp_path / "train.py").write_text("print('hi')\n")
    config = ClusterConfig(path=tmp_path / "cluster.toml", cluster=ClusterSection(name="p"),
                           hosts=(HostSection(name="h0", address="local",
                                              workdir=str(workdir)),))
    pool = HostPool(config)
    try:
        bundle = build_bundle(user_folder=tmp_path)
        assert await push_code(await pool.get("h0"), bundle) is True
    finally:
        await pool.aclose()
    left = {p.name for p in cache.iterdir()}
    # the new tree and the 7 most recently used stay; older unused ones go
    assert left == {bundle.digest, *(t.name for t in trees[:KEEP_TREES - 1])}


async def test_hosts_sharing_a_workdir_push_one_tree_at_once_and_it_lands_whole(
        tmp_path: Path) -> None:
    # Local hosts (or one home over NFS) share the code cache: their pushes race to place the
    # same tree. Every push succeeds, the tree is complete, and no copy is left inside it.
    import asyncio

    from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
    from remote.hosts.pool import HostPool
    from remote.hosts.push import MARKER, code_dir, code_root, push_code

    workdir = tmp_path / "work"
    hosts = tuple(HostSection(name=f"h{i}", address="local", workdir=str(workdir))
                  for i in range(4))
    pool = HostPool(ClusterConfig(path=tmp_path / "cluster.toml",
                                  cluster=ClusterSection(name="p"), hosts=hosts))
    folder = tmp_path / "repo"
    folder.mkdir()
    for i in range(200):  # enough to unpack that the hosts' pushes overlap
        (folder / f"m{i}.py").write_text("y = 2\n" * 200)
    try:
        transports = [await pool.get(host.name) for host in hosts]
        for version in range(8):
            (folder / "train.py").write_text(f"print({version})\n")
            bundle = build_bundle(user_folder=folder)
            await asyncio.gather(*(push_code(t, bundle, present=False) for t in transports))
            tree = Path(code_dir(str(workdir), bundle.digest))
            assert (tree / MARKER).exists()
            assert (tree / USER_CODE_DIR / "train.py").read_text() == f"print({version})\n"
            assert sorted(p.name for p in tree.iterdir()) == sorted([MARKER, *{
                name.split("/")[0] for name in _members_names(bundle.tar)}])
        assert not [p.name for p in Path(code_root(str(workdir))).iterdir()
                    if p.name.startswith(".")]
    finally:
        await pool.aclose()


def _members_names(tar_bytes: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return tar.getnames()


async def test_a_tree_left_without_its_marker_is_replaced_by_the_push(tmp_path: Path) -> None:
    from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
    from remote.hosts.pool import HostPool
    from remote.hosts.push import MARKER, code_dir, push_code

    (tmp_path / "train.py").write_text("print('hi')\n")
    bundle = build_bundle(user_folder=tmp_path)
    workdir = tmp_path / "work"
    broken = Path(code_dir(str(workdir), bundle.digest))
    (broken / USER_CODE_DIR).mkdir(parents=True)
    (broken / USER_CODE_DIR / "train.py").write_text("half")
    pool = HostPool(ClusterConfig(path=tmp_path / "cluster.toml",
                                  cluster=ClusterSection(name="p"),
                                  hosts=(HostSection(name="h0", address="local",
                                                     workdir=str(workdir)),)))
    try:
        assert await push_code(await pool.get("h0"), bundle) is True
    finally:
        await pool.aclose()
    assert (broken / MARKER).exists()
    assert (broken / USER_CODE_DIR / "train.py").read_text() == "print('hi')\n"


def test_corral_check_names_the_folder_over_budget_and_what_is_left_out(tmp_path: Path) -> None:
    from remote.checks.script_imports import left_out_items
    from remote.config.read import parse_cluster
    from remote.config.task_code import user_code

    (tmp_path / "train.py").write_text("print('hi')\n")
    for i in range(70):
        with (tmp_path / f"gen_{i:02}.py").open("wb") as sparse:
            sparse.truncate(2**20)
    with (tmp_path / "big.onnx").open("wb") as sparse:
        sparse.truncate(2 * 2**30)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "dump.bin").write_bytes(b"x" * 3 * 2**20)
    (tmp_path / ".corralignore").write_text("raw/\n")
    os.mkfifo(tmp_path / "pipe")
    config = parse_cluster('[cluster]\nname = "s"\n[[hosts]]\nname = "a"\naddress = "local"\n'
                           '[run]\nscript = "train.py"\n', path=tmp_path / "cluster.toml")
    [over, left_out, home, data] = left_out_items(config, user_code(config.run,
                                                                    config.path.parent))
    assert not over.ok and "gen_00.py (1.0 MiB)" in over.detail
    assert left_out.ok and left_out.detail == "warning: not pushed: pipe (a FIFO)"
    assert home.detail == "stays home (.corralignore): raw (3.0 MiB)"
    assert "big.onnx (2048.0 MiB)" in data.detail  # the data sync's, with its size


def test_a_folder_with_too_many_files_is_named_without_walking_it_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from remote.hosts import push_tree

    monkeypatch.setattr(push_tree, "MAX_FILES", 3)
    for i in range(3):
        (tmp_path / f"d{i}").mkdir()
        for j in range(3):
            (tmp_path / f"d{i}" / f"f{j}.py").write_text("x = 1\n")
    with pytest.raises(UsageError, match="more than 3 files to push"):
        build_bundle(user_folder=tmp_path)
