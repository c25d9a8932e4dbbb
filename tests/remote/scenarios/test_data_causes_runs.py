"""The runs (slow tier) of what ``tests/remote/test_data_causes.py`` tests: a data sync that fails
keeps its cause (issue 81, item 4): a host's disk filling mid-file, a cache it may not write, a
file name that is not UTF-8 each end in corral's sentence, never ``data sync to b failed:
Traceback (most recent call last):``; a loop of links in the data is left out as the push's
warning says."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from remote.hosts.data_sync import cache_dir
from tests.remote.test_data_causes import _data, _host, _repo, _send


@pytest.mark.slow  # a mount namespace (unshare): the slow tier's (tests/tiers.py)
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare (a tmpfs in a mount namespace)")
async def test_a_host_disk_filling_mid_file_is_named_disk_full(tmp_path: Path) -> None:
    repo = _repo(tmp_path, size=3 << 20)
    cache = Path(cache_dir(str(tmp_path / "work")))
    cache.mkdir(parents=True)
    python = tmp_path / "python"  # the host's Python, its data cache on a 1 MiB tmpfs
    python.write_text("#!/bin/sh\nexec unshare -m --propagation private sh -c 'mount -t tmpfs "
                      f"-o size=1m tmpfs \"$0\" && exec \"$@\"' {cache} {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    said = await _send(_host(tmp_path, str(python)), _data(repo, tmp_path), tmp_path)
    assert said == (f"data sync to b failed: disk full on b at {cache}: the data did not fit; "
                    "free space there, or leave some data out with a line in .corralignore")
