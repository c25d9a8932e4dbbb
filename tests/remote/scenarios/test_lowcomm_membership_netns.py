"""Islands joining and leaving a low-communication run on the product's path (issue 61's
acceptance): ``corral run`` of an ``exchange = "local"`` run with live membership on two
network-namespace hosts over real sshd, ``corral join n3`` while it trains (the joiner becomes
an island at the next round's end), then ``corral leave n2`` (it finishes its round, its change
in the average), then ``corral stop``; the survivors' ranks are in their first processes, and
the parameters are the replay's: every island from the start, the same islands per round
(``--island-schedule``, trainer/lowcomm/schedule.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from remote.config.read import load_cluster

try:
    import netns
    from runkit import one_process_flags
    from test_membership_join_sshd import _events, _wait  # the run's files, read as they grow
except ImportError:  # collected as a package module
    from tests.remote import netns  # type: ignore[no-redef]
    from tests.remote.runkit import one_process_flags  # type: ignore[no-redef]
    from tests.remote.scenarios.test_membership_join_sshd import (  # type: ignore[no-redef]
        _events,
        _wait,
    )
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "trainer"))  # its helpers
from membership_runs import pid_of, schedule_of
from trainer_runs import check, final_params, launch, max_rel_diff

pytestmark = [pytest.mark.netns, pytest.mark.sshd, pytest.mark.slow]

STEPS = 2000
"""More global batches than the run trains: it is stopped once the leave has taken effect,
however long the join took on this machine."""
RUN = ('exchange = "local"\nlive_membership = true\nsamples = 512\nglobal_batch = 24\n'
       f'seed = 3\noptimizer = "adamw"\nlr = 0.003\nround_steps = 1\nsteps = {STEPS}\n'
       'checkpoint_every = 0\npolicy = "static"\n')
"""Rounds of 1 inner step per island (a round's end comes soon after every change), every
island as fast as the others (static shares: the replay's inner steps are the live run's), int8
with error feedback (the default)."""
SLOW = {name: "slowdown = 25.0\n" for name in ("n1", "n2", "n3")}
"""Steps slow enough (an emulated slowdown, which changes no number) that few are trained while
the joiner starts: the replay trains as many."""
WAIT_S = 300.0
"""The longest a corral command (the join: its check, push and launch) or the run's end may
take."""


def _changes(run_dir: Path) -> list[dict[str, Any]]:
    return [e for e in _events(run_dir, 0) if e["event"] == "membership"]


def _rounds(run_dir: Path) -> list[dict[str, Any]]:
    return [e for e in _events(run_dir, 0) if e["event"] == "round"]


def _join_then_leave(box: netns.NetnsCluster, run: subprocess.Popen[str], runs: Path,
                     before: set[Path]) -> tuple[Path, int, float]:
    """Once the run trains: ``corral join n3`` (cluster.toml got it meanwhile), then, once
    rank 0 let it in, ``corral leave n2``, then a round of n1 and n3. The run's directory, the
    joiner's member id and when the join was asked."""
    _wait("the run's first round", lambda: any(
        _rounds(d) for d in set(runs.glob("*/")) - before), run)
    (run_dir,) = [d for d in set(runs.glob("*/")) - before if _rounds(d)]
    box.write_cluster_toml(sys.executable, run=RUN, order=("n1", "n2", "n3"), master="n1",
                           host_lines=SLOW)
    asked = time.time()
    joined = netns.corral(box, "join", "n3", timeout=WAIT_S)
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert "rank 0 lets it in at a round's end" in " ".join(joined.stdout.split())
    _wait("n3 joined", lambda: any(e["change"] == "joined" for e in _changes(run_dir)), run)
    member = _changes(run_dir)[0]["members"][-1]
    left = netns.corral(box, "leave", "n2", timeout=WAIT_S)
    assert left.returncode == 0, left.stdout + left.stderr
    assert "n2 leaves at the end of the round under way" in " ".join(left.stdout.split())
    _wait("n2 left", lambda: any(e.get("cause") == "asked" for e in _changes(run_dir)), run)
    _wait("a round of n1 and n3",
          lambda: _rounds(run_dir)[-1]["island_hosts"] == ["n1", "n3"], run)
    return run_dir, member, asked


def _replayed(path: Path, rounds: list[dict[str, Any]], last: int, out: Path) -> Path:
    """The replay of the run's ``rounds`` to step ``last``: three local ranks, one island
    each (n1, n2, n3), the islands per round given; its run directory."""
    started = time.monotonic()
    settings = replace(load_cluster(path).run, steps=last)
    check(launch(3, *one_process_flags(settings), "--islands", "0,1,2",
                 "--island-schedule", schedule_of(rounds, ("n1", "n2", "n3")),
                 "--run-dir", str(out)))
    print(f"the replay: {time.monotonic() - started:.1f} s")
    return out


def test_an_island_joins_and_one_leaves_over_sshd_and_the_replay_ends_equal(
        box: netns.NetnsCluster, tmp_path: Path) -> None:
    path = box.write_cluster_toml(sys.executable, run=RUN, order=("n1", "n2"), master="n1",
                                  host_lines=SLOW)
    runs = box.root / "runs"
    before = set(runs.glob("*/")) if runs.exists() else set()
    argv, env = netns.corral_command(box, "run")
    log = tmp_path / "corral-run.log"
    with log.open("w") as out:
        run = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True,
                               cwd=netns.REPO, env=env)
    try:
        run_dir, member, asked = _join_then_leave(box, run, runs, before)
        stopped = netns.corral(box, "stop", timeout=WAIT_S)  # at the round's end
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        run.wait(timeout=WAIT_S)
    finally:
        if run.poll() is None:
            netns.corral(box, "stop", "--grace", "3", timeout=60)
            run.kill()
            run.wait()
    output = " ".join(log.read_text().split())
    assert "rank 0 lets it in at a round's end" in output, output[-4000:]
    rounds = _rounds(run_dir)
    # Every global batch once, in order, whatever the islands; stopped at a round's end.
    assert [r["first_step"] for r in rounds] == [1] + [r["step"] + 1 for r in rounds[:-1]]
    last = rounds[-1]["step"]
    ends = [_events(run_dir, m)[-1] for m in (0, 1, member)]
    assert [(e["event"], e["status"]) for e in ends] == \
        [("end", "interrupted"), ("end", "left"), ("end", "interrupted")], ends
    assert ends[0]["step"] == ends[2]["step"] == last < STEPS
    sets = [tuple(r["island_hosts"]) for r in rounds]
    assert sets[0] == ("n1", "n2") and ("n1", "n2", "n3") in sets and sets[-1] == ("n1", "n3")
    assert not any(r["dropped"] for r in rounds)
    for rank in (0, member):  # the survivors trained on in their first processes
        assert len(pid_of(_events(run_dir, rank))) == 1
    record = json.loads((run_dir / "run.json").read_text())
    assert record["state"] == "stopped" and run.returncode == 1, output[-4000:]
    assert record["hosts"] == ["n1", "n3"] and record["left_hosts"] == ["n2"], record
    assert "no process left on any host" in record["cleanup"], record
    assert box.processes_left() == {}
    joined_at = next(e["t"] for e in _changes(run_dir) if e["change"] == "joined")
    print(f"lowcomm join over sshd: `corral join` to the round that let n3 in "
          f"{joined_at - asked:.1f} s; {last} steps, {len(rounds)} rounds")
    replay = _replayed(path, rounds, last, tmp_path / "replay")
    assert max_rel_diff(final_params(run_dir), final_params(replay)) <= 1e-6
