"""A user's DDP script with corral's helper, run by ``corral run --script`` on the demo's three
local hosts (issue 78): ``corral leave`` of its middle host and ``corral join`` of it again are
live, through the real command line, on a run nobody follows; the others keep their processes
and ``corral stop`` leaves nothing behind."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from remote.config.init import demo_toml
from tests.remote.test_membership_embedded import ROOT, _changes, _corral, _events, _wait

SCRIPT = ROOT / "tests" / "trainer" / "ddp_live_script.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_ddp_helper_script_takes_corral_leave_and_join_live(tmp_path: Path) -> None:
    shutil.copy(SCRIPT, tmp_path / "train.py")
    path = tmp_path / "cluster.toml"  # HOME is tmp_path: the runs are the test's
    path.write_text(demo_toml().replace("[run]\n", '[run]\nscript = "train.py"\nargs = '
                                        '["--epochs", "1000", "--pause", "0.2"]\n', 1),
                    encoding="utf-8")
    started = _corral(path, "run", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "hosts leave and join live" in started.stdout  # the start line says it
    found = re.search(r"launched run ([^\s:]+)", started.stdout)
    assert found is not None, started.stdout
    run_id = found.group(1)
    run_dir = tmp_path / ".corral" / "runs" / run_id
    try:
        _wait("step 5", lambda: any(e["event"] == "step" and e["step"] >= 5
                                    for e in _events(run_dir, 2)))
        left = _corral(path, "leave", "medium")
        assert left.returncode == 0, left.stdout + left.stderr
        _wait("medium left", lambda: bool(_changes(run_dir)))
        assert _changes(run_dir) == [("left", "asked", ["medium"])]
        joined = _corral(path, "join", "medium")
        assert joined.returncode == 0, joined.stdout + joined.stderr
        _wait("medium joined", lambda: len(_changes(run_dir)) == 2)
        assert _changes(run_dir)[1] == ("joined", None, ["medium"])
        _wait("the joiner's first step", lambda: any(e["event"] == "step"
                                                      for e in _events(run_dir, 3)))
        for member in (0, 2):  # the survivors trained on in their first processes
            assert len([e for e in _events(run_dir, member) if e["event"] == "start"]) == 1
        assert _events(run_dir, 1)[-1]["status"] == "left"
    finally:
        stopped = _corral(path, "stop", run_id)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    record = json.loads((run_dir / "run.json").read_text())
    assert "no process left on any host" in record["cleanup"], record
