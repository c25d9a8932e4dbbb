"""``[cluster] run_root`` that cannot be used is caught by ``corral check`` on every host (and
here), and a full disk at launch is said as "disk full on HOST at PATH"."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from remote.api import RunStatus
from remote.checks.run_root import local_item
from remote.run.controller import SshRunController

try:
    from runkit import bounded, run_processes, tiny_run
except ImportError:  # collected as a package
    from tests.remote.runkit import bounded, run_processes, tiny_run  # type: ignore[no-redef]

pytestmark = [pytest.mark.sshd, pytest.mark.slow]


def _needs_mount_namespaces() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private mount per host")


ROOM = "65m"
"""A tmpfs just over the check's minimum free space (``MIN_RUN_ROOT_FREE_BYTES``)."""


def _private_mount(target: Path, how: str) -> list[str]:
    """Run the daemon in a mount namespace of its own where ``target`` is a tmpfs: ``full``
    (small, filled to the last byte), ``ro`` (read-only) or ``room`` (enough to pass the
    check, empty)."""
    options = {"full": "size=256k", "ro": "ro,size=256k", "room": f"size={ROOM}"}[how]
    fill = f" && (dd if=/dev/zero of={target}/fill bs=4k 2>/dev/null; true)" if how == "full" \
        else ""
    script = f"mount -t tmpfs -o {options} tmpfs {target}{fill} && exec \"$@\""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]


async def test_check_names_a_full_and_a_read_only_run_root(
    sshd_cluster, tmp_path: Path
) -> None:
    _needs_mount_namespaces()
    run_root = tmp_path / "ssh" / "runs"  # the cluster's run_root (see conftest)
    run_root.mkdir(parents=True)
    cluster = sshd_cluster(2, prefix=lambda i: _private_mount(run_root, ("full", "ro")[i]))
    config = cluster.config(run=tiny_run(steps=2))
    assert Path(config.cluster.run_root) == run_root
    controller = SshRunController(config)
    try:
        report = await controller.check()
        items = {(i.host, i.name): i for i in report.items}
        full, readonly = items[("h0", "run-root")], items[("h1", "run-root")]
        assert not full.ok and f"disk full on h0 at {config.cluster.run_root}" in full.detail
        assert not readonly.ok and "not writable" in readonly.detail and readonly.hint
        assert items[("*", "run-root")].ok  # on this machine it is a plain directory
    finally:
        await controller.aclose()


async def test_a_disk_that_fills_after_the_check_is_said_at_launch(
    sshd_cluster, tmp_path: Path
) -> None:
    _needs_mount_namespaces()
    run_root = tmp_path / "ssh" / "runs"  # the cluster's run_root (see conftest)
    run_root.mkdir(parents=True)
    cluster = sshd_cluster(1, prefix=lambda i: _private_mount(run_root, "room"))
    controller = SshRunController(cluster.config(run=tiny_run(steps=2)))
    try:
        handle = await controller.start()
        events = []
        async for event in bounded(handle.events()):
            events.append(event)
            if isinstance(event, RunStatus) and event.state == "pushing":
                # The check has passed; something else fills the disk before the launch.
                h0 = await controller.pool.get("h0")
                await h0.run(f"dd if=/dev/zero of={run_root}/fill bs=64k 2>/dev/null; true",
                             timeout=60.0)
        final = events[-1]
        assert isinstance(final, RunStatus) and final.state == "failed"
        assert f"disk full on h0 at {run_root}" in final.detail, final.detail
        assert "Traceback" not in final.detail
        assert run_processes(handle.run_id) == []
    finally:
        await controller.aclose()


def test_a_local_run_root_that_is_a_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "runs"
    path.write_text("not a directory")
    item = local_item(str(path))
    assert not item.ok and "is not a directory" in item.detail and "run_root" in item.hint
