"""The runs (slow tier) of what ``tests/remote/test_membership_embedded.py`` tests: live membership
with nothing written (issue 78): ``corral init``'s demo cluster.toml, the repository's own,
takes ``corral leave`` and ``corral join`` of its middle host as it stands, on a run started
with ``--detach`` that nobody follows."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from remote.config.init import demo_toml

ROOT = Path(__file__).resolve().parents[3]


WAIT_S = 300.0


def _corral(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console", "-c", str(path), *args],
                          capture_output=True, text=True, timeout=WAIT_S, cwd=path.parent,
                          env={**os.environ, "HOME": str(path.parent), "COLUMNS": "200",
                               "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})


def _events(run_dir: Path, member: int) -> list[dict[str, Any]]:
    path = run_dir / "metrics" / f"rank-{member}.jsonl"
    whole = path.read_text().split("\n")[:-1] if path.exists() else []  # last: being written
    return [json.loads(line) for line in whole if line.strip()]


def _changes(run_dir: Path) -> list[tuple[str, str | None, list[str]]]:
    return [(e["change"], e.get("cause"), e["hosts"]) for e in _events(run_dir, 0)
            if e["event"] == "membership"]


def _wait(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_S} s"
        time.sleep(0.2)  # polling the run's files for a condition, with a deadline


@contextlib.contextmanager
def medium_left_and_joined(path: Path, home: Path) -> Iterator[tuple[Path, str]]:
    """``corral run --detach`` of ``path`` (``home``: its HOME), ``corral leave medium`` once
    rank 2 passed step 5, then ``corral join medium`` at once (no follower attached): yields
    the run's folder and the start's output once both changes are recorded; then ``corral
    stop``, which leaves no process on any host."""
    started = _corral(path, "run", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    found = re.search(r"launched run ([^\s:]+)", started.stdout)
    assert found is not None, started.stdout
    run_id = found.group(1)
    run_dir = home / ".corral" / "runs" / run_id
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
        yield run_dir, started.stdout
    finally:
        stopped = _corral(path, "stop", run_id)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    record = json.loads((run_dir / "run.json").read_text())
    assert "no process left on any host" in record["cleanup"], record


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_demo_takes_a_leave_and_a_join_of_its_middle_host_detached(
        tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"  # HOME is tmp_path: the demo's ~/.corral is the test's
    path.write_text(demo_toml().replace("steps = 300", "steps = 100000"), encoding="utf-8")
    with medium_left_and_joined(path, tmp_path) as (run_dir, _):
        member = [e for e in _events(run_dir, 0) if e["event"] == "membership"][1]["members"][-1]
        _wait("the joiner's first step", lambda: any(e["event"] == "step"
                                                      for e in _events(run_dir, member)))
        # slow (launch rank 2, rank 1 after the leave) trained on in its first process
        slow = _events(run_dir, 2)
        assert len([e for e in slow if e["event"] == "start"]) == 1
        assert {e["rank"] for e in slow} == {2}
        record = json.loads((run_dir / "run.json").read_text())
        assert record["hosts"] == ["fast", "slow", "medium"] and not record.get("left_hosts")
