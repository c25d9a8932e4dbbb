"""The trainer tests' rank spawner imports the libraries it is asked to once, before the fork,
and nothing of corral's: each rank finds them loaded and the trainer not. The warm spawner
each test worker forks launches from gives each its own directory, environment and session,
and a launch past its timeout ends with its ranks."""

from __future__ import annotations

from trainer_runs import (
    REPO,
    script_libraries,
    task_libraries,
)

from trainer.integrations.user_modules import CORRAL_PACKAGES


def test_a_causal_lm_launch_preloads_its_task_packages_and_others_nothing() -> None:
    assert task_libraries(("--steps", "3", "--task", "causal_lm")) == ["transformers", "peft"]
    assert task_libraries(("--task", "image")) == task_libraries(("--steps", "3")) == []


def test_a_scripts_libraries_leave_out_pythons_torch_and_corrals() -> None:
    libraries = script_libraries(REPO / "examples" / "scripts" / "hf_trainer.py")
    assert {"transformers", "peft", "datasets"} <= set(libraries)
    tops = {name.split(".")[0] for name in libraries}
    assert not tops & {"torch", "argparse", "json", "corral", *CORRAL_PACKAGES}
