"""Recovery: a rank killed mid-run with ``[run] max_restarts = 1`` ends ``completed`` with the
parameters of one uninterrupted process; a host lost for good with ``on_host_loss = "continue"`` is
left behind by the other (the hot path: no restart) and the run completes there."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from remote.api import HostStatus, LogLine, RankEvent, RunEvent, RunStatus
from remote.config.cluster import HostSection
from remote.run.controller import SshRunController
from trainer.events import CheckpointEvent, EndEvent, MembershipEvent, StartEvent, StepEvent

try:
    from conftest import SshdCluster
    from runkit import bounded, cut_ssh, one_process_flags, run_processes, tiny_run
except ImportError:  # collected as a package
    from tests.remote.conftest import SshdCluster  # type: ignore[no-redef]
    from tests.remote.runkit import (  # type: ignore[no-redef]
        bounded,
        cut_ssh,
        one_process_flags,
        run_processes,
        tiny_run,
    )
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "trainer"))  # its helpers
from trainer_runs import check, launch

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

STEPS = 200
SLOWDOWN = 3.0
"""Both hosts emulate a device this much slower (trainer/step/slowdown.py: a sleep after each
step's compute, no CPU): a step then takes at least 3 times its CPU time, loaded machine or
not, so the kill and the cut below land with seconds to spare in few steps, each of which
would otherwise cost CPU. Emulation changes no number the run computes."""


def slow_hosts(cluster: SshdCluster) -> list[HostSection]:
    """Every daemon of ``cluster`` as a host at ``SLOWDOWN``."""
    return [cluster.host(daemon.name, slowdown=SLOWDOWN) for daemon in cluster.hosts]


def newest_params(run_dir: Path) -> dict[str, torch.Tensor]:
    newest = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    assert newest.name == f"step-{STEPS:08d}.pt"
    return dict(torch.load(newest, map_location="cpu", weights_only=False)["model"])


async def run_to_end(controller: SshRunController, kill_rank: int | None = None
                     ) -> tuple[str, list[RunEvent], int | None]:
    """Start a run and follow it; with ``kill_rank``, SIGKILL that rank once a checkpoint
    exists and the run has gone on past it. Returns the run id, events, killed step."""
    handle = await controller.start()
    events: list[RunEvent] = []
    pids: dict[int, int] = {}
    checkpointed = False
    killed_at: int | None = None
    async for event in bounded(handle.events()):
        events.append(event)
        if not isinstance(event, RankEvent):
            continue
        inner = event.event
        if isinstance(inner, StartEvent):
            pids[inner.rank] = inner.pid
        checkpointed |= isinstance(inner, CheckpointEvent)
        if (kill_rank is not None and killed_at is None and checkpointed
                and isinstance(inner, StepEvent) and kill_rank in pids):
            killed_at = inner.step
            os.kill(pids[kill_rank], signal.SIGKILL)
    return handle.run_id, events, killed_at


async def test_a_killed_rank_with_max_restarts_ends_completed_with_the_same_parameters(
    sshd_cluster, tmp_path: Path
) -> None:
    cluster = sshd_cluster(2)
    run = replace(tiny_run(steps=STEPS), checkpoint_every=25, policy="static", split=(4, 4))
    controller = SshRunController(cluster.config(hosts=slow_hosts(cluster),
                                                 run=replace(run, max_restarts=1)))
    try:
        restarted_id, events, killed_at = await run_to_end(controller, kill_rank=1)
    finally:
        await controller.aclose()
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    assert killed_at is not None and killed_at < STEPS
    said = [e.text for e in events if isinstance(e, LogLine) and e.host == "*"]
    # (The cause named is usually h1 rank 1; on a loaded machine its launcher may report
    # after the peers' errors, which then name the failure: either way one restart.)
    assert sum(t.startswith("restart 1 of 1 after: ") for t in said) == 1, said
    assert any(isinstance(e, RunStatus) and e.state == "launching" and "restart 1" in e.detail
               for e in events)
    resumed = [e.event for e in events if isinstance(e, RankEvent)
               and isinstance(e.event, StartEvent) and e.event.resumed_from]
    # Resumed from a checkpoint (rank 0 may have written a newer one than the step the
    # follower had seen when it killed rank 1).
    assert {s.rank for s in resumed} == {0, 1} and 0 < resumed[0].step < STEPS, resumed
    # The reference: one process, no restart (a lone rank: no SSH, no launcher).
    check(launch(1, *one_process_flags(run), "--run-dir", str(tmp_path / "alone")))
    root = Path(cluster.config().cluster.run_root)
    a, b = newest_params(tmp_path / "alone"), newest_params(root / restarted_id)
    worst = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)).item()
                for k in a)
    print(f"max relative parameter difference, restarted vs one process: {worst:.3g}")
    assert worst <= 1e-6, worst
    assert run_processes(restarted_id) == []


async def test_a_host_lost_for_good_is_left_behind_and_the_run_completes_in_the_same_processes(
    sshd_cluster
) -> None:
    """``on_host_loss = "continue"`` takes the hot path by default (``live_membership`` not
    set): h1 goes away for good after the first checkpoint (its SSH server and sessions, and its
    rank: a machine switched off), the survivor leaves it behind in its own process (a
    ``membership`` event, no restart) and the run completes there; corral's follower takes h1's
    lost connection and its rank's end for no failure. The restart path of a lost host is
    tests/remote/scenarios/test_benched_host_loss_sshd.py's (``live_membership = false``)."""
    cluster = sshd_cluster(2)
    steps = 500  # the loss is seen at once, h1's SSH ~2 s after the cut: well before the end
    run = replace(tiny_run(steps=steps), checkpoint_every=50, policy="static",
                  on_host_loss="continue")
    config = cluster.config(hosts=slow_hosts(cluster), run=run,
                            ssh=cluster.ssh_section(lost_after=2.0))
    daemon = cluster.hosts[1]
    controller = SshRunController(config)
    events: list[RunEvent] = []
    pids: dict[int, int] = {}
    cut = False
    try:
        handle = await controller.start()
        async for event in bounded(handle.events()):
            events.append(event)
            if isinstance(event, RankEvent) and isinstance(event.event, StartEvent):
                pids[event.event.rank] = event.event.pid
            if (not cut and isinstance(event, RankEvent) and 1 in pids
                    and isinstance(event.event, CheckpointEvent)):
                cut = True  # h1's SSH server and sessions go away for good, and its rank
                cut_ssh(daemon)
                os.kill(pids[1], signal.SIGKILL)
    finally:
        await controller.aclose()
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    said = [e.text for e in events if isinstance(e, LogLine) and e.host == "*"]
    assert any(t.startswith("launched run ") and "a lost host other than h0 is left behind"
               in t for t in said), said
    assert not any(t.startswith(("dropped h1", "restart")) for t in said), said
    [left] = [e.event for e in events if isinstance(e, RankEvent)
              and isinstance(e.event, MembershipEvent)]
    assert (left.change, left.hosts, left.world_size) == ("left", ("h1",), 1), left
    assert any(isinstance(e, HostStatus) and e.host == "h1" and e.state == "left"
               for e in events)
    starts = [e.event for e in events if isinstance(e, RankEvent)
              and isinstance(e.event, StartEvent)]
    assert [(s.rank, s.pid) for s in starts if s.rank == 0] == [(0, pids[0])]  # one process
    ends = [e.event for e in events if isinstance(e, RankEvent) and isinstance(e.event, EndEvent)]
    assert ends[-1].status == "completed" and ends[-1].step == steps and ends[-1].rank == 0
    assert run_processes(handle.run_id) == []


def test_a_host_failing_attempts_in_a_row_counts_as_lost() -> None:
    from remote.run.lifecycle import Finding, RunOutcome
    from remote.run.restart_policy import REPEATED_FAILURES, count_failure

    def failed(host: str | None) -> Finding:
        return Finding(RunOutcome.FAILED, detail="x", failed_host=host)

    streaks: dict[str, int] = {}
    streaks, found = count_failure(streaks, failed("h1"))
    assert found is None  # once: a restart may cure it
    streaks, found = count_failure(streaks, failed("h2"))
    assert found is None  # another host's failure ends h1's run
    streaks, found = count_failure(streaks, failed("h1"))
    assert found is None
    for _ in range(REPEATED_FAILURES - 1):
        streaks, found = count_failure(streaks, failed("h1"))
    assert found == "h1"
    # A run that did not fail, or failed without a culprit, ends every streak.
    streaks, found = count_failure(streaks, replace(failed("h1"), outcome=RunOutcome.COMPLETED))
    assert found is None
    assert streaks == {}
    streaks, found = count_failure(streaks, failed(None))
    assert found is None and streaks == {}
