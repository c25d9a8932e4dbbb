"""The trainer tests' rank spawner imports the libraries it is asked to once, before the fork,
and nothing of corral's: each rank finds them loaded and the trainer not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from trainer_runs import (
    REPO,
    SPAWN_RANKS,
    check,
    rank_env,
    run_launcher,
    script_libraries,
    task_libraries,
)

from trainer.integrations.user_modules import CORRAL_PACKAGES

RANK_SAYS = """\
import json, os, sys
print(json.dumps({"rank": os.environ["RANK"], "world": os.environ["WORLD_SIZE"],
                  "loaded": sorted(n for n in ("colorsys", "trainer", "profiles")
                                   if n in sys.modules)}))
"""


@pytest.mark.slow
def test_preloaded_modules_are_there_in_every_rank_and_corrals_are_not(tmp_path: Path) -> None:
    script = tmp_path / "rank_says.py"
    script.write_text(RANK_SAYS)
    proc = run_launcher([sys.executable, str(SPAWN_RANKS), "--preload", "colorsys", "2",
                         str(script)], env=rank_env(), timeout=120)
    check(proc)
    said = sorted((json.loads(line) for line in proc.stdout.splitlines()),
                  key=lambda seen: seen["rank"])
    assert said == [{"rank": str(r), "world": "2", "loaded": ["colorsys"]} for r in range(2)]


def test_a_causal_lm_launch_preloads_its_task_packages_and_others_nothing() -> None:
    assert task_libraries(("--steps", "3", "--task", "causal_lm")) == ["transformers", "peft"]
    assert task_libraries(("--task", "image")) == task_libraries(("--steps", "3")) == []


def test_a_scripts_libraries_leave_out_pythons_torch_and_corrals() -> None:
    libraries = script_libraries(REPO / "examples" / "scripts" / "hf_trainer.py")
    assert {"transformers", "peft", "datasets"} <= set(libraries)
    tops = {name.split(".")[0] for name in libraries}
    assert not tops & {"torch", "argparse", "json", "corral", *CORRAL_PACKAGES}
