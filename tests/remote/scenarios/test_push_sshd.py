"""Code push: one tar stream into a content-addressed directory, skipped when unchanged."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from remote.hosts.pool import HostPool
from remote.hosts.push import (
    KEEP_TREES,
    MARKER,
    build_bundle,
    code_dir,
    code_root,
    package_files,
    push_code,
)


def _package(root: Path, text: str) -> None:
    (root / "pkgx").mkdir(parents=True, exist_ok=True)
    (root / "pkgx" / "__init__.py").write_text(text)
    (root / "pkgx" / "__pycache__").mkdir(exist_ok=True)
    (root / "pkgx" / "__pycache__" / "junk.pyc").write_bytes(b"\0")


def test_the_bundle_holds_both_packages_without_caches() -> None:
    files = [rel for rel, _ in package_files()]
    assert "trainer/__init__.py" in files and "profiles/__init__.py" in files
    assert not any("__pycache__" in rel or rel.endswith(".pyc") for rel in files)
    assert build_bundle().digest == build_bundle().digest  # deterministic


@pytest.mark.sshd
async def test_push_sends_once_and_again_only_when_the_tree_changes(
    sshd_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = sshd_cluster(1)
    src = tmp_path / "src"
    _package(src, "VALUE = 1\n")
    monkeypatch.syspath_prepend(str(src))
    sys.modules.pop("pkgx", None)
    pool = HostPool(cluster.config())
    try:
        transport = await pool.get("h0")
        first = build_bundle(("pkgx",))
        assert await push_code(transport, first) is True
        remote = Path(code_dir(transport.host.workdir, first.digest))
        assert (remote / "pkgx" / "__init__.py").read_text() == "VALUE = 1\n"
        assert (remote / MARKER).exists() and not (remote / "pkgx" / "__pycache__").exists()
        assert await push_code(transport, first) is False  # unchanged: not sent again

        _package(src, "VALUE = 2\n")
        second = build_bundle(("pkgx",))
        assert second.digest != first.digest
        assert await push_code(transport, second) is True
        assert (Path(code_dir(transport.host.workdir, second.digest)) / "pkgx" /
                "__init__.py").read_text() == "VALUE = 2\n"
        # Nothing half-written is left beside the trees.
        assert sorted(p.name for p in remote.parent.iterdir()) == sorted(
            [first.digest, second.digest])
    finally:
        await pool.aclose()


@pytest.mark.sshd
async def test_a_host_holding_many_recent_trees_takes_the_next_push_over_ssh(
    sshd_cluster, tmp_path: Path
) -> None:
    """Issue 59: with 9+ recent trees in the cache every push failed (the prune's status)."""
    cluster = sshd_cluster(1)
    pool = HostPool(cluster.config())
    try:
        transport = await pool.get("h0")
        root = Path(code_root(transport.host.workdir))
        root.mkdir(parents=True, exist_ok=True)
        held = {hashlib.sha256(str(i).encode()).hexdigest() for i in range(3 * KEEP_TREES)}
        for name in held:
            (root / name).mkdir()
            (root / name / MARKER).touch()
        bundle = build_bundle()
        assert await push_code(transport, bundle) is True
        assert await push_code(transport, bundle) is False
        assert {p.name for p in root.iterdir()} == held | {bundle.digest}
        # A tree edited on the host is not trusted: the next push sends it again.
        (Path(code_dir(transport.host.workdir, bundle.digest)) / "trainer" /
         "__init__.py").write_text("raise SystemExit('tampered')\n")
        assert await push_code(transport, bundle) is True
        assert await push_code(transport, bundle) is False
    finally:
        await pool.aclose()
