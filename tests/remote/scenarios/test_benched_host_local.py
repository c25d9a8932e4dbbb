"""A host benched by the balancer (share 0, out of the gradient exchange) keeps its processes
and takes every step; ``corral stop`` ends and verifies them like any other host's, and its
rank ends as interrupted at the same step boundary as the others (real torchrun ranks on
three ``local`` hosts)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from console.model.run import RunModel
from console.model.topology import run_topology
from remote.api import RankEvent, RunEvent
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.events import RunStatus
from remote.run.controller import SshRunController
from tests.remote.runkit import bounded, run_processes
from trainer.events import EndEvent, RebalanceEvent, StepEvent

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
BENCHED_STEPS = 3
"""Steps the benched host must take at share 0 before the stop."""


def _config(tmp_path: Path) -> ClusterConfig:
    """h0, h1 at full speed and h2 60x slower, on the wide MLP whose exchange outweighs its
    compute (tests/trainer/scenarios/test_active_set.py): h2 is benched within the first windows."""
    (tmp_path / "tasks").mkdir()
    shutil.copy(REPO / "examples" / "tasks" / "curve.py", tmp_path / "tasks" / "curve.py")
    hosts = tuple(HostSection(name=f"h{i}", address="local", python=sys.executable,
                              workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1,
                              slowdown=s) for i, s in enumerate((1.0, 1.0, 60.0)))
    run = RunSection(task="tasks/curve.py:build", task_options={"hidden": 2880, "samples": 2048},
                     global_batch=24, split=(8, 8, 8), policy="dynamic", rebalance_every=5,
                     steps=100000, lr=0.0005, seed=3, checkpoint_every=1000)
    return ClusterConfig(path=tmp_path / "cluster.toml",
                         cluster=ClusterSection(name="bench", run_root=str(tmp_path / "runs")),
                         hosts=hosts, run=run)


def _alive(run_dir: Path, host: str) -> bool:
    """Whether the host's launcher group (recorded at launch) still has a process."""
    pgid = int((run_dir / "hosts" / f"{host}.pgid").read_text())
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_benched_host_stays_alive_and_is_stopped_and_verified_like_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As on CI's clean machine: no stored profile (profiles/store.py), whatever this one holds.
    monkeypatch.setenv("CORRAL_PROFILE_DIR", str(tmp_path / "no-profiles"))
    config = _config(tmp_path)
    controller = SshRunController(config)
    events: list[RunEvent] = []
    benched_steps, report = 0, None
    try:
        handle = await controller.start()
        run_dir = tmp_path / "runs" / handle.run_id
        async for event in bounded(handle.events()):
            events.append(event)
            inner = event.event if isinstance(event, RankEvent) else None
            if isinstance(inner, StepEvent) and event.host == "h2":  # type: ignore[union-attr]
                benched_steps += inner.local_batch == 0
            if benched_steps == BENCHED_STEPS and report is None:
                assert _alive(run_dir, "h2")  # benched, not gone
                report = await handle.stop(grace_s=20.0)
    finally:
        await controller.aclose()
    assert report is not None and report.clean, report
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "stopped", final
    moves = [e.event for e in events if isinstance(e, RankEvent)
             and isinstance(e.event, RebalanceEvent)]
    assert any(m.split[2] == 0 and " sit" in m.reason for m in moves), moves
    ends = {e.host: e.event for e in events
            if isinstance(e, RankEvent) and isinstance(e.event, EndEvent)}
    assert {host: end.status for host, end in ends.items()} == {
        "h0": "interrupted", "h1": "interrupted", "h2": "interrupted"}
    assert len({end.step for end in ends.values()}) == 1  # one step boundary for all
    assert not _alive(run_dir, "h2") and run_processes(handle.run_id) == []
    # The console's network view, from the same events: the mesh the check measured, and h2
    # sitting out in the balancer's own figures (its rebalance event carries them).
    model = RunModel.of_run(handle.run_id)
    model.apply_all(events)
    top = run_topology(model)
    assert top.measured and len(top.links) == 3
    badge = next(b for b in top.hosts if b.host == "h2")
    # Benched alone, or with another host in one change that brought that one back later:
    # the figures are those of the change that benched it, whatever the profile store holds.
    assert badge.sits_out and re.match(r"sits out( with [\w, ]+)?: ", badge.text), badge
    assert "(balancer, step" in badge.text, badge
