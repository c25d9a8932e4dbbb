"""The README's quick start works with a stock Debian/Ubuntu interpreter (PEP 668: its pip
refuses to install into the system): in a fresh copy of the repository, the set-up step of
``scripts/run.sh`` run with the system's ``/usr/bin/python3`` first on PATH makes the
project's virtual environment, and ``corral check`` on the embedded cluster.toml then passes;
the LLM demo, run next as the README says (``bash scripts/llm-demo.sh``, here with ``check`` so
it stops after the model and corpus are written and the console's configuration loads), adds
its extra to that environment and passes too (one fresh copy for both: a virtual environment
with torch is the slowest part). Skips where there is no ``/usr/bin/python3``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Two installs into fresh environments: past pytest's default limit on a loaded machine (602 s
# seen with three heavy tests beside it), well inside its steps' own limits.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
"""A PATH on which ``python3`` is the system's interpreter."""


def _fresh_copy(dest: Path) -> None:
    """The files a clone of the repository holds (tracked and new, not ignored ones)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=False)
    if listed.returncode != 0:  # not a git checkout: everything but the usual leftovers
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".venv", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache", "runs"))
        return
    for name in listed.stdout.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _system_python_env(tmp_path: Path) -> dict[str, str]:
    """An environment like a fresh login's with the system's python3 first on PATH."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3 on this machine")
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("PIP_", "http_", "https_", "HTTP_", "HTTPS_", "NO_PROXY", "no_proxy"))}
    env.update(PATH=SYSTEM_PATH, HOME=str(tmp_path / "home"), LANG="C.UTF-8")
    (tmp_path / "home").mkdir()
    resolved = subprocess.run(["sh", "-c", "command -v python3"], env=env, capture_output=True,
                              text=True, check=True).stdout.strip()
    assert Path(resolved).resolve() == SYSTEM_PYTHON.resolve()
    return env


def test_the_quick_start_and_the_llm_demo_work_from_a_fresh_copy_with_the_system_python(
        tmp_path: Path) -> None:
    env = _system_python_env(tmp_path)
    clone = tmp_path / "corral"
    _fresh_copy(clone)
    # The quick start's set-up step makes the project's virtual environment...
    setup = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=clone, env=env,
                           capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-3000:]
    venv_python = clone / ".venv" / "bin" / "python"
    assert venv_python.exists(), "the set-up step made no project virtual environment"
    # ...in which the pre-flight check on the embedded cluster.toml passes.
    check = subprocess.run([str(venv_python), "-m", "console", "-c", "cluster.toml", "check"],
                           cwd=clone, env={**env, "COLUMNS": "200"}, capture_output=True,
                           text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]
    assert "all checks passed" in check.stdout
    # The LLM demo, run as the README says, adds its extra to that environment and passes.
    demo = subprocess.run(["bash", "scripts/llm-demo.sh", "check"], cwd=clone,
                          env={**env, "COLUMNS": "200"}, capture_output=True, text=True,
                          timeout=1800, stdin=subprocess.DEVNULL)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "all checks passed" in demo.stdout
    made = tmp_path / "home" / ".corral" / "demo"
    assert (made / "tiny-lm" / "config.json").is_file() and (made / "corpus.txt").is_file()
