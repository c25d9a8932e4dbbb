"""A launcher that vanished (no exit file: it did not fit) on a full disk is reported as a full
disk by the host's tailer, not as a launcher that is merely gone. The full disk is a small
tmpfs in a mount namespace of its own (needs root and ``unshare``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from remote.run.stream import tail_command, tailer_paths

FILL = "dd if=/dev/zero of={run}/fill bs=64k 2>/dev/null; "


def _tail_on(run: Path, mount: Path, fill: bool) -> str:
    # A process group that is gone: the launcher ended, leaving no exit file.
    gone = subprocess.Popen(["true"])
    gone.wait()
    command = tail_command(sys.executable, str(run), "h", {})
    setup = (f"mount -t tmpfs -o size=2m tmpfs {mount} && mkdir -p {run}/hosts && "
             f"echo {gone.pid} > {run}/hosts/h.pgid && "
             + (FILL.format(run=run) if fill else "") + command)
    done = subprocess.run(["unshare", "-m", "sh", "-c", setup], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    return [line for line in done.stdout.splitlines() if line.startswith("X\t")][-1]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private tmpfs")
@pytest.mark.slow  # a tmpfs in its own mount namespace (unshare)
def test_a_launcher_gone_on_a_full_disk_is_reported_as_diskfull(tmp_path: Path) -> None:
    assert "exit" in tailer_paths("h")
    mount = tmp_path / "disk"
    mount.mkdir()
    run = mount / "run"
    assert _tail_on(run, mount, fill=True) == "X\tdiskfull"
    assert _tail_on(run, mount, fill=False) == "X\tgone"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private tmpfs")
@pytest.mark.slow  # a tmpfs in its own mount namespace (unshare)
def test_a_launcher_ending_on_a_full_disk_writes_no_noise_and_no_partial_exit_file(
        tmp_path: Path) -> None:
    """On the old code the launcher's exit status write printed ``sh: echo: I/O error`` into
    the run's output (shown as the host's line) and left an empty ``hosts/h.exit.tmp``."""
    from remote.config.cluster import HostSection
    from remote.run.launch import exit_file_words

    mount = tmp_path / "disk"
    mount.mkdir()
    words = exit_file_words(HostSection(name="h", address="local"))
    script = (f"mount -t tmpfs -o size=1m tmpfs {mount} && mkdir {mount}/hosts && "
              f"{FILL.format(run=mount)}cd {mount} && sh -c 'false{words}'; "
              f"ls {mount}/hosts")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.stderr == "" and done.stdout == "", done
