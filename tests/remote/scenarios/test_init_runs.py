"""The runs (slow tier) of what ``tests/remote/test_init.py`` tests: ``corral init``: a
cluster.toml to start from, never over an existing file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from remote.config.init import demo_toml
from tests.remote.test_init import ROOT


def _corral(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "200",
                               "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_init_in_an_empty_directory_writes_a_file_check_accepts(tmp_path: Path) -> None:
    done = _corral(tmp_path, "init")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "cluster.toml").read_text(encoding="utf-8") == demo_toml()
    check = _corral(tmp_path, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "all checks passed" in check.stdout
