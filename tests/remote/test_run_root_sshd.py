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


def _private_mount(target: Path, how: str) -> list[str]:
    """Run the daemon in a mount namespace of its own where ``target`` is a small tmpfs:
    ``full`` (filled to the last byte) or ``ro`` (read-only)."""
    options = "size=256k" if how == "full" else "ro,size=256k"
    fill = f" && (dd if=/dev/zero of={target}/fill bs=4k 2>/dev/null; true)" if how == "full" \
        else ""
    script = f"mount -t tmpfs -o {options} tmpfs {target}{fill} && exec \"$@\""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]


async def test_check_names_a_full_and_a_read_only_run_root_and_launch_says_disk_full(
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

        # Without the check, the launch itself says it (and leaves nothing behind).
        handle = await controller.start()
        final = [e async for e in bounded(handle.events())][-1]
        assert isinstance(final, RunStatus) and final.state == "failed"
        # The hosts launch in parallel: whichever fails first is named.
        assert ("disk full on h0 at" in final.detail
                or ("h1" in final.detail and "Read-only file system" in final.detail)), final.detail
        assert "Traceback" not in final.detail
        assert run_processes(handle.run_id) == []
    finally:
        await controller.aclose()


def test_a_local_run_root_that_is_a_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "runs"
    path.write_text("not a directory")
    item = local_item(str(path))
    assert not item.ok and "is not a directory" in item.detail and "run_root" in item.hint
