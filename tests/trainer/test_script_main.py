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
import json, os, sys
import sibling
if __name__ == "__main__":
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
    seen = json.loads(done.stdout)
    assert seen == {"argv": [str(script), "--out", "a b"], "sibling": 7, "run_dir": "/runs/r-1",
                    "file": str(script)}
