"""A user's DDP script with corral's helper, run by ``corral run --script`` on the demo's three
local hosts (issue 78): ``corral leave`` of its middle host and ``corral join`` of it again are
live, through the real command line, on a run nobody follows; the others keep their processes
and ``corral stop`` leaves nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from remote.config.init import demo_toml
from tests.remote.scenarios.test_membership_embedded_runs import (
    ROOT,
    _events,
    _wait,
    medium_left_and_joined,
)

SCRIPT = ROOT / "tests" / "trainer" / "ddp_live_script.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_ddp_helper_script_takes_corral_leave_and_join_live(tmp_path: Path) -> None:
    shutil.copy(SCRIPT, tmp_path / "train.py")
    path = tmp_path / "cluster.toml"  # HOME is tmp_path: the runs are the test's
    path.write_text(demo_toml().replace("[run]\n", '[run]\nscript = "train.py"\nargs = '
                                        '["--epochs", "1000", "--pause", "0.2"]\n', 1),
                    encoding="utf-8")
    with medium_left_and_joined(path, tmp_path) as (run_dir, started):
        assert "hosts leave and join live" in started  # the start line says it
        _wait("the joiner's first step", lambda: any(e["event"] == "step"
                                                      for e in _events(run_dir, 3)))
        for member in (0, 2):  # the survivors trained on in their first processes
            assert len([e for e in _events(run_dir, member) if e["event"] == "start"]) == 1
        assert _events(run_dir, 1)[-1]["status"] == "left"
