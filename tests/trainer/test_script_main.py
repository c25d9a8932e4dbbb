"""A user's script started through ``trainer.integrations.script_main`` runs as ``python SCRIPT
ARGS`` would: its own ``__main__``, its arguments, its folder first on the import path; the run
directory from the command line (where ``corral stop`` finds it) reaches it as CORRAL_RUN_DIR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from trainer.integrations.contract import RUN_DIR_ENV

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """\
import atexit, json, os, sys
import sibling
if __name__ == "__main__":
    atexit.register(print, "the script's exit handler ran", file=sys.stderr)
    print(json.dumps({"argv": sys.argv, "sibling": sibling.VALUE,
                      "run_dir": os.environ["CORRAL_RUN_DIR"], "file": __file__}))
    sys.exit(3)
"""


def test_the_script_runs_as_its_own_main_with_its_args(tmp_path: Path) -> None:
    (tmp_path / "user").mkdir()
    script = tmp_path / "user" / "train.py"
    script.write_text(SCRIPT)
    (tmp_path / "user" / "sibling.py").write_text("VALUE = 7\n")
    env = {k: v for k, v in os.environ.items() if k != RUN_DIR_ENV}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-m", "trainer.integrations.script_main", "--run-dir",
                           "/runs/r-1", str(script), "--out", "a b"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr  # the script's own exit status
    assert "the script's exit handler ran" in done.stderr  # trackers get to close their runs
    seen = json.loads(done.stdout)
    assert seen == {"argv": [str(script), "--out", "a b"], "sibling": 7, "run_dir": "/runs/r-1",
                    "file": str(script)}


def test_a_cpu_rank_takes_its_cores_before_the_script_runs(tmp_path: Path) -> None:
    script = tmp_path / "where.py"
    script.write_text("import json, os, sys\nprint(json.dumps({'cores': sorted("
                      "os.sched_getaffinity(0)), 'threads': os.environ['OMP_NUM_THREADS'], "
                      "'argv': sys.argv[1:]}))\n")
    env = {k: v for k, v in os.environ.items() if k not in (RUN_DIR_ENV, "OMP_NUM_THREADS")}
    env.update(PYTHONPATH=str(REPO), LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    first = min(os.sched_getaffinity(0))
    done = subprocess.run([sys.executable, "-m", "trainer.integrations.script_main", "--run-dir",
                           "/runs/r-1", "--cores", str(first), str(script), "--cores", "x"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # pinned to the one core given, one thread per core; the script's own --cores untouched
    assert json.loads(done.stdout) == {"cores": [first], "threads": "1", "argv": ["--cores", "x"]}


NOTHING_FAILED = """\
from profiles.user_errors import CorralError


class Ended(CorralError):
    title = "nothing to join"
    exit_code = 0


raise Ended("the run ended before this host could be let in")
"""


def test_a_corral_error_that_is_no_failure_ends_the_rank_with_status_0(tmp_path: Path) -> None:
    """A joiner whose run ended first (``RunEnded``): said in one line, no traceback, status 0
    (a joiner's status 1 marked the run it never joined failed)."""
    script = tmp_path / "join.py"
    script.write_text(NOTHING_FAILED)
    env = {k: v for k, v in os.environ.items() if k != RUN_DIR_ENV}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-m", "trainer.integrations.script_main", "--run-dir",
                           str(tmp_path / "run"), str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "corral: nothing to join: the run ended before this host" in done.stderr
    assert "Traceback" not in done.stderr
