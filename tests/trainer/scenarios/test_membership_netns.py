"""Live membership under faults (trainer/membership/watch.py, abort.py): ranks on
network-namespace hosts lose members every way a machine goes — its traffic dropped mid-step,
frozen while a generation forms or while the run evaluates, killed — and hosts leave and come
back, ten changes in one run; the survivors notice each loss within ``LOSS_DETECT_S``, go on in
their first processes, and, stopped after the tenth, end with the parameters of one
uninterrupted process of as many steps."""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from membership_runs import LiveRun, Place, live_run, pid_of
from trainer_runs import REPO, check, final_params, launch, max_rel_diff

from trainer.membership.contract import LOSS_DETECT_S

try:
    import netns
except ImportError:  # collected as a package module
    from tests.remote import netns

pytestmark = [pytest.mark.netns, pytest.mark.slow]

EVAL_EVERY = 5
STEPS = 400
"""More steps than the ten changes take (199 at a load of 20 on a 2-core VM): the run is
stopped after the tenth, so the margin costs nothing."""


def flags(steps: int) -> tuple[str, ...]:
    """The run's flags, ``steps`` long (a constant learning rate: its first steps do not
    depend on the run's length)."""
    return ("--samples", "256", "--global-batch", "32", "--steps", str(steps), "--seed", "7",
            "--lr", "0.02", "--momentum", "0.9", "--checkpoint-every", "0",
            "--eval-every", str(EVAL_EVERY), "--eval-samples", "128")


SLOW = ("--slowdown", "3")
"""Steps long enough (an emulated slowdown, which changes no number) for changes mid-run."""


def stop_when_forming(run: LiveRun, node: netns.Node, proc: subprocess.Popen[bytes],
                      generation: int) -> subprocess.Popen[bytes]:
    """A helper in ``node``'s namespace that freezes ``proc`` (SIGSTOP) as soon as rank 0
    arrives to form ``generation``: the survivors are forming it with ``proc``'s rank.
    Returned once it watches the store (its start takes seconds: torch's import)."""
    code = ("import datetime, os, signal, sys, torch.distributed as d\n"
            "s = d.TCPStore(sys.argv[1], int(sys.argv[2]), None, False,"
            " timeout=datetime.timedelta(seconds=300), wait_for_workers=False)\n"
            "print('watching', flush=True)\n"
            "s.wait([f'ready/{sys.argv[3]}/0'])\n"
            "os.kill(int(sys.argv[4]), signal.SIGSTOP)\n")
    helper = subprocess.Popen(["ip", "netns", "exec", node.netns, sys.executable, "-c", code,
                               run.master_addr, str(run.store_port), str(generation),
                               str(proc.pid)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert helper.stdout is not None and helper.stdout.readline() == "watching\n"
    return helper


def left(run: LiveRun, host: str, cause: str) -> bool:
    return any(e["change"] == "left" and e["hosts"] == [host] and e.get("cause") == cause
               for e in run.membership())


def joined(run: LiveRun, host: str, times: int) -> bool:
    return sum(e["change"] == "joined" and e["hosts"] == [host] for e in run.membership()) >= times


def step_of(events: list[dict[str, Any]]) -> list[int]:
    return [e["step"] for e in events if e["event"] == "step"]


def check_changes(run: LiveRun) -> None:
    """The ten changes as rank 0 recorded them, and the planned leavers' clean ends."""
    changes = [e for e in run.membership() if e["change"] != "refused"]
    assert len(changes) == 10, changes
    numbers = [e["generation"] for e in changes]
    assert numbers == list(range(1, 11))
    asked, forming = changes[4:6]
    assert (asked["hosts"], asked["cause"]) == (["h1"], "asked")
    assert "did not form" in asked["reason"]  # h3 was lost while it formed ...
    assert (forming["hosts"], forming["redone_steps"]) == (["h3"], 0)  # ... then re-formed
    lost_after_eval = changes[7]
    assert lost_after_eval["hosts"] == ["h2"]
    # Frozen as it reported an evaluation step: lost in the evaluation (the step stood,
    # nothing redone) or, where the evaluation was over first (a fast machine: 0.07 s), in
    # the next step (that one step redone); the parameters below hold either way.
    assert lost_after_eval["redone_steps"] in (0, 1), lost_after_eval
    for member in (1, 4):  # the planned leavers ended cleanly, saying so
        assert run.events(member)[-1]["status"] == "left"


def stop_survivor(run: LiveRun) -> int:
    """The ten changes made, the survivor alone is stopped (after its next step, with a
    checkpoint), not run on to ``STEPS``; it ran on in its first process, each step once.
    Returns its last step."""
    survivor = run.ranks[0]  # the master's rank
    survivor.send_signal(signal.SIGTERM)
    run.finish(expect_failed=[survivor])
    assert survivor.returncode == 128 + signal.SIGTERM, run.output()
    end = run.events(0)[-1]
    assert (end["event"], end["status"]) == ("end", "interrupted"), end
    last = int(end["step"])
    assert run.membership()[-1]["step"] < last < STEPS
    assert pid_of(run.events(0)) == [survivor.pid]
    assert step_of(run.events(0)) == list(range(1, last + 1))
    return last


def test_ten_changes_with_drops_and_freezes_end_with_one_process_parameters(
        tmp_path: Path, box: netns.NetnsCluster) -> None:
    n1, n2, n3 = box.nodes
    places = {"h0": Place(n1.netns, n1.ifname), "h1": Place(n2.netns, n2.ifname),
              "h2": Place(n3.netns, n3.ifname), "h3": Place(n2.netns, n2.ifname)}
    with live_run(tmp_path / "live", (*flags(STEPS), *SLOW, "--split", "12,10,10"),
                  ("h0", "h1", "h2"), places, master_addr=n1.address) as run:
        h3 = run.join("h3")  # 1: a third host joins
        run.wait_for("h3 joined", lambda: joined(run, "h3", 1))
        run.ask_leave("h1")  # 2: a planned leave ...
        run.wait_for("h1 left", lambda: left(run, "h1", "asked"))
        run.join("h1")  # 3: ... and the same host back
        run.wait_for("h1 back", lambda: joined(run, "h1", 1))
        step_s = statistics.median(e["step_s"] for e in run.events(0)
                                   if e["event"] == "step")
        # 4: h2's traffic dropped mid-step (not refused: nothing closes a connection).
        drop = ["ip", "netns", "exec", n3.netns, "iptables", "-A"]
        dropped_at = time.monotonic()
        for chain in ("INPUT", "OUTPUT"):
            subprocess.run([*drop, chain, "-j", "DROP"], check=True)
        run.wait_for("h2 unreachable", lambda: left(run, "h2", "unreachable"))
        drop_to_step = time.monotonic() - dropped_at
        run.kill_process(run.ranks[2])  # its rank, cut off, never learns it left
        subprocess.run(["ip", "netns", "exec", n3.netns, "iptables", "-F"], check=True)
        # 5, 6: h1 asked to leave, and h3 frozen as the survivors form the generation
        # without h1 (the fifth): lost while it forms, formed again without it.
        freezer = stop_when_forming(run, n1, h3, generation=5)
        run.ask_leave("h1")
        run.wait_for("h3 lost while forming", lambda: len(run.membership()) >= 6)
        assert freezer.wait(timeout=30) == 0
        run.kill_process(h3)
        h2 = run.join("h2")  # 7: the host cut off comes back
        run.wait_for("h2 back", lambda: joined(run, "h2", 1))
        # 8: h2 frozen right after an evaluation step's report: lost during the evaluation.
        run.wait_for("an eval step on h2", lambda: any(
            s % EVAL_EVERY == 0 for s in step_of(run.events(5))[-1:]))
        run.kill_process(h2, signal.SIGSTOP)
        run.wait_for("h2 lost", lambda: len(run.membership()) >= 8)
        run.kill_process(h2)
        h3 = run.join("h3")  # 9: the host frozen before comes back
        run.wait_for("h3 back", lambda: joined(run, "h3", 2))
        run.kill_process(h3)  # 10: and is killed
        run.wait_for("h3 died", lambda: left(run, "h3", "ranks_died"))
        last = stop_survivor(run)
        check_changes(run)
        print(f"DROP to the survivors' next completed step: {drop_to_step:.2f} s "
              f"(a step: {step_s:.2f} s)")
        assert drop_to_step <= LOSS_DETECT_S + 2 * step_s
    alone = tmp_path / "alone"
    check(launch(1, *flags(last), "--run-dir", str(alone)))
    assert max_rel_diff(final_params(alone), final_params(run.run_dir)) <= 1e-6
