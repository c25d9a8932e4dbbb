"""``on_host_loss = "continue"`` with a benched host: h2 sits out of the gradient exchange
(60x slower on a model whose exchange outweighs its compute), then its SSH server and sessions
go away for good. The run drops h2, re-splits the global batch over h0 and h1 from the newest
checkpoint and completes there (three sshd hosts on this machine). This is the restart path,
asked for with ``live_membership = false`` (``on_host_loss = "continue"`` alone takes the hot
path: tests/remote/scenarios/test_recovery_sshd.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from remote.api import LogLine, RankEvent, RunEvent, RunStatus
from remote.config.cluster import RunSection
from remote.run.controller import SshRunController
from tests.remote.runkit import bounded, cut_ssh, run_processes
from trainer.events import CheckpointEvent, EndEvent, StartEvent, StepEvent

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
STEPS = 120
"""h2 is benched at the first rebalance (step 6) and cut after the next checkpoint
(step 10): the ~100 steps left take several times the ~2-3 s until the loss is declared
(``lost_after`` 2 s), loaded or not; each step after the resume costs the two hosts' CPU."""


async def test_a_benched_host_lost_for_good_is_dropped_and_the_run_completes(
        sshd_cluster) -> None:
    cluster = sshd_cluster(3)
    (cluster.root / "tasks").mkdir()
    shutil.copy(REPO / "examples" / "tasks" / "curve.py", cluster.root / "tasks" / "curve.py")
    run = RunSection(task="tasks/curve.py:build", task_options={"hidden": 2880, "samples": 2048},
                     global_batch=24, split=(8, 8, 8), policy="dynamic", rebalance_every=5,
                     steps=STEPS, lr=0.0005, seed=3, checkpoint_every=10,
                     on_host_loss="continue", live_membership=False)
    hosts = [cluster.host("h0"), cluster.host("h1"), cluster.host("h2", slowdown=60.0)]
    config = cluster.config(hosts=hosts, run=run, ssh=cluster.ssh_section(lost_after=2.0))
    daemon = cluster.hosts[2]
    controller = SshRunController(config)
    events: list[RunEvent] = []
    benched = checkpointed = cut = False
    try:
        handle = await controller.start()
        async for event in bounded(handle.events()):
            events.append(event)
            inner = event.event if isinstance(event, RankEvent) else None
            benched |= (isinstance(inner, StepEvent) and event.host == "h2"  # type: ignore[union-attr]
                        and inner.local_batch == 0)
            checkpointed |= benched and isinstance(inner, CheckpointEvent)
            if checkpointed and not cut:
                cut = True  # h2's SSH server and sessions go away for good, while benched
                cut_ssh(daemon)
    finally:
        await controller.aclose()
    assert cut
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    said = [e.text for e in events if isinstance(e, LogLine) and e.host == "*"]
    assert any(t.startswith("dropped h2 from the run") and "continuing on h0, h1" in t
               for t in said), said
    last_start = [e.event for e in events if isinstance(e, RankEvent)
                  and isinstance(e.event, StartEvent)][-1]
    assert last_start.world_size == 2 and last_start.resumed_from
    assert sum(last_start.split) == 24  # the whole global batch on the two hosts left
    ends = [e.event for e in events if isinstance(e, RankEvent) and isinstance(e.event, EndEvent)]
    assert ends[-1].status == "completed" and ends[-1].step == STEPS
    assert run_processes(handle.run_id) == []


