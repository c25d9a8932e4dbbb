"""The user's modules win on a script rank: a ``trainer.py`` and a ``profiles/`` package beside
the script are what it imports, corral's opt-ins stay importable as ``corral.*`` (and under
their old name without a user ``trainer``), and an import in corral's own code, run after the
script took the names, still finds corral's modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

OWN_NAMES = """\
import inspect
import sys

import profiles
import trainer
from corral.ddp import Shares

assert trainer.__file__.startswith(sys.argv[1]), trainer.__file__
assert profiles.WHOSE == "the user"
assert Shares.__module__ == "trainer.integrations.ddp"
# corral's code importing lazily, after the user's trainer took the name: corral's modules
corral_globals = dict(Shares.__init__.__globals__)
exec("from trainer.dist import rank_info\\nimport profiles.user_errors as errors",
     corral_globals)
assert inspect.getfile(corral_globals["rank_info"]).startswith(sys.argv[2])
assert corral_globals["errors"].CorralError.__name__ == "CorralError"
assert sys.modules["trainer"] is trainer and sys.modules["profiles"] is profiles  # still the user's
print("user modules win")
"""

OLD_NAME = """\
from trainer.integrations.hf import corral
from corral.ddp import Shares
import trainer.integrations.ddp as ddp

assert Shares is ddp.Shares and corral.__module__ == "trainer.integrations.hf"
print("old name works")
"""


def _run(cwd: Path, script: str, *args: str,
         python_path: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    env["PYTHONPATH"] = os.pathsep.join((str(REPO), *python_path))
    return subprocess.run(
        [sys.executable, "-m", "trainer.integrations.script_main", "--run-dir",
         str(cwd.parent / "run"), "--cwd", str(cwd), script, *args],
        cwd=cwd.parent, env=env, capture_output=True, text=True, timeout=120)


def test_the_scripts_own_trainer_and_profiles_win_and_corral_keeps_its_own(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "profiles").mkdir(parents=True)
    (repo / "trainer.py").write_text("class Trainer:\n    pass\n")
    (repo / "profiles" / "__init__.py").write_text("WHOSE = 'the user'\n")
    (repo / "train.py").write_text(OWN_NAMES)
    done = _run(repo, "train.py", str(repo), str(REPO / "trainer"))
    assert done.returncode == 0 and "user modules win" in done.stdout, done.stderr[-2000:]


def test_the_old_opt_in_name_works_without_a_user_trainer(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(OLD_NAME)
    done = _run(repo, "train.py")
    assert done.returncode == 0 and "old name works" in done.stdout, done.stderr[-2000:]


NAMESPACE = """\
import os
import sys

sys.path.append(os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
from trainer.trainer_utils import WHOSE  # the repository's trainer/, no __init__.py

assert WHOSE == "the repository's", WHOSE
print("namespace trainer wins")
"""


def test_a_namespace_trainer_package_the_script_puts_on_its_path_wins(tmp_path: Path) -> None:
    """A repository whose ``trainer/`` folder has no ``__init__.py`` (a namespace package) and
    whose script, run from that folder, appends the repository's root to ``sys.path``: corral's
    regular ``trainer`` package, wherever it sits on the path, must not hide it."""
    repo = tmp_path / "repo"
    (repo / "trainer").mkdir(parents=True)
    (repo / "trainer" / "trainer_utils.py").write_text("WHOSE = \"the repository's\"\n")
    (repo / "trainer" / "train.py").write_text(NAMESPACE)
    done = _run(repo / "trainer", "train.py")
    assert done.returncode == 0 and "namespace trainer wins" in done.stdout, done.stderr[-2000:]


SECOND_COPY = """\
import sys

import trainer.integrations.run as run
from trainer.integrations.hf import corral

# the very modules the rank runs (its plain-script events read ScriptRun.made), not the copy's
assert run.__file__.startswith(sys.argv[1]), run.__file__
assert corral.__code__.co_filename.startswith(sys.argv[1]), corral.__code__.co_filename
print("one corral")
"""


def test_a_second_copy_of_corral_on_the_hosts_path_is_not_taken_for_the_users(
        tmp_path: Path) -> None:
    """A corral clone (or an editable install's folder) on the host's ``PYTHONPATH``, after the
    pushed code: its ``trainer`` is corral's, not a module of the user's, so the opt-in the
    script imports is the rank's own (taken for the user's, the opt-in's and the plain script's
    events were both written: every step twice, a leaver's ``left`` end followed by a
    ``completed`` one)."""
    copy = tmp_path / "clone"
    copy.mkdir()
    for package in ("trainer", "profiles"):
        (copy / package).symlink_to(REPO / package, target_is_directory=True)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(SECOND_COPY)
    done = _run(repo, "train.py", str(REPO / "trainer"), python_path=(str(copy),))
    assert done.returncode == 0 and "one corral" in done.stdout, done.stderr[-2000:]
