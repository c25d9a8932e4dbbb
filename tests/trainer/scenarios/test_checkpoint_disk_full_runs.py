"""The runs (slow tier) of what ``tests/trainer/test_checkpoint_disk_full.py`` tests: a checkpoint
that meets a full disk: one line naming the host and the folder, the previous checkpoints
untouched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


SAVE_TWICE = """
import json, sys, torch
from profiles.user_errors import CorralError
from trainer.checkpoint.files import load_newest_checkpoint, save_checkpoint
run_dir = sys.argv[1]
save_checkpoint(run_dir, {"step": 1, "model": {"w": torch.ones(20_000)}})
try:
    save_checkpoint(run_dir, {"step": 2, "model": {"w": torch.ones(200_000)}})
    error = None
except CorralError as exc:
    error = [exc.title, exc.message]
path, state, skipped = load_newest_checkpoint(run_dir)
print(json.dumps({"error": error, "newest": state["step"], "skipped": skipped}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private tmpfs")
@pytest.mark.slow  # a tmpfs in its own mount namespace (unshare)
def test_a_full_disk_names_host_and_folder_and_keeps_the_previous_checkpoint(
        tmp_path: Path) -> None:
    mount = tmp_path / "disk"
    mount.mkdir()
    script = (f"mount -t tmpfs -o size=300k tmpfs {mount} && "
              f"exec {sys.executable} -c '{SAVE_TWICE}' {mount}/run")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "CORRAL_HOST": "box-7"})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["error"] == ["disk full", seen["error"][1]]
    assert seen["error"][1].startswith(f"disk full on box-7 at {mount}/run/checkpoints:")
    assert seen["newest"] == 1 and seen["skipped"] == []
