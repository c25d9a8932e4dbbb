"""A host's default interpreter: the set-up environment, else (local) the one running corral."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from remote.config.cluster import HostSection
from remote.hosts.interpreter import python_word, venv_python


def _resolve(word: str) -> str:
    # PATH without the directory of this interpreter: `python3` would be another one.
    done = subprocess.run(["sh", "-c", f"printf %s {word}"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}, check=True)
    return done.stdout


def test_a_local_host_runs_the_interpreter_running_corral(tmp_path: Path) -> None:
    host = HostSection(name="here", address="local", workdir=str(tmp_path / "work"))
    assert _resolve(python_word(host)) == sys.executable


def test_an_ssh_host_runs_python3_from_path(tmp_path: Path) -> None:
    host = HostSection(name="there", address="10.0.0.9", workdir=str(tmp_path / "work"))
    assert _resolve(python_word(host)) == "python3"


def test_the_set_up_environment_wins_when_it_exists(tmp_path: Path) -> None:
    host = HostSection(name="there", address="10.0.0.9", workdir=str(tmp_path / "my work"))
    venv = Path(venv_python(host))
    venv.parent.mkdir(parents=True)
    venv.symlink_to(sys.executable)
    assert _resolve(python_word(host)) == str(venv)


def test_a_python_given_in_cluster_toml_is_used_as_it_is(tmp_path: Path) -> None:
    host = HostSection(name="here", address="local", python="/opt/py $(x)/bin/python")
    assert _resolve(python_word(host)) == "/opt/py $(x)/bin/python"
