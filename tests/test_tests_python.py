"""scripts/tests_python.sh, the interpreter the test script makes the project's .venv from: the
distribution's /usr/bin/python3 where it is python3's version, has the venv module, and python3
on PATH is no virtual environment and holds no torch of its own; else python3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "tests_python.sh"
DISTRIBUTION = Path("/usr/bin/python3")


def _chosen(tmp_path: Path, python3: str) -> str:
    """What the script prints with ``python3`` on PATH running ``python3`` (a wrapper, so the
    one on PATH is a file of its own, as a version manager's shim is)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec {python3} "$@"\n')
    wrapper.chmod(0o755)
    return subprocess.run(["bash", str(SCRIPT)], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def _distribution_qualifies() -> None:
    probe = ("import importlib.util, sys; import ensurepip, venv; "
             "sys.exit(1 if importlib.util.find_spec('torch') else 0)")
    if not DISTRIBUTION.exists() or subprocess.run([str(DISTRIBUTION), "-c", probe],
                                                   capture_output=True).returncode != 0:
        pytest.skip("no /usr/bin/python3 with the venv module and without torch here")


def test_another_build_of_the_distributions_version_gives_way_to_the_distributions(
        tmp_path: Path) -> None:
    _distribution_qualifies()
    assert _chosen(tmp_path, str(DISTRIBUTION)) == str(DISTRIBUTION)


def test_a_python3_that_is_a_virtual_environment_or_holds_torch_is_kept(tmp_path: Path) -> None:
    # The suite's own interpreter holds torch (and is the test script's .venv, where it made one).
    assert _chosen(tmp_path, sys.executable) == "python3"
