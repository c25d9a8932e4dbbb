"""The check's measured links go with the run's record: a seat opened later (``corral attach``,
a ``--serve`` tab) gets them with its first status, so its network view (``m``) draws what the
launching console drew, not "No links measured yet"."""

from __future__ import annotations

import time
from pathlib import Path

from remote.checks.mesh import PINGS, check_mesh
from remote.events import RunStatus
from remote.hosts.pool import HostPool
from remote.records.mesh import keep_mesh, kept_mesh
from remote.records.runs import RunInfo, local_run_dir
from remote.run.handle import SshRunHandle
from tests.remote.runkit import local_cluster, tiny_run
from trainer.balance.estimate import HostVerdict
from trainer.balance.links import PairLink

LINKS = (PairLink(source="a", target="b", address="10.0.0.2", port=4000, reached=True,
                  rtt_s=0.001, bytes_per_s=1.2e8, rate_probes=(1.1e8, 1.2e8, 1.3e8),
                  rtt_probes=(0.001, 0.002), measured_t=1_700_000_000.0),
         PairLink(source="b", target="a", address="10.0.0.1", port=4001, reached=False,
                  error="refused"))
ESTIMATE = (HostVerdict(host="a", pays=True, gain=0.4), HostVerdict(host="b", missing="profile"))


def test_the_links_and_estimate_are_read_back_as_written(tmp_path: Path) -> None:
    keep_mesh(tmp_path, LINKS, ESTIMATE)
    assert kept_mesh(tmp_path) == (LINKS, ESTIMATE)
    (tmp_path / "mesh.json").write_text('{"links": [{"source": 1}]')  # torn
    assert kept_mesh(tmp_path) == ((), ())
    assert kept_mesh(tmp_path / "none") == ((), ())


def test_a_seat_opened_later_gets_the_launchs_links_with_its_first_status(
        tmp_path: Path) -> None:
    config = local_cluster(tmp_path, ("a", "b"), tiny_run(5))
    info = RunInfo(run_id="mesh-1", cluster="local", state="running", started=time.time(),
                   hosts=("a", "b"))
    local_run_dir(config, "mesh-1").mkdir(parents=True)
    pool = HostPool(config)
    launched = SshRunHandle(config, pool, info, launch=True)
    launched._said(RunStatus(t=1.0, run_id="mesh-1", state="pushing", links=LINKS,
                             estimate=ESTIMATE))
    seat = SshRunHandle(config, pool, info, launch=False)
    first = seat._said(RunStatus(t=2.0, run_id="mesh-1", state="running"))
    assert isinstance(first, RunStatus)
    assert (first.links, first.estimate) == (LINKS, ESTIMATE)
    later = seat._said(RunStatus(t=3.0, run_id="mesh-1", state="completed"))
    assert isinstance(later, RunStatus) and later.links == ()  # told once


async def test_the_check_measures_each_direction_in_probes_with_their_time(
        tmp_path: Path) -> None:
    """Each direction's throughput as several probes (the receiver times each slice), every
    round trip, and when: what the network view takes its median, spread and age from."""
    config = local_cluster(tmp_path, ("a", "b"), tiny_run(5))
    pool = HostPool(config)
    before = time.time()
    try:
        found = await check_mesh(config, pool, {"a": "127.0.0.1", "b": "127.0.0.1"})
    finally:
        await pool.aclose()
    assert len(found.links) == 2
    for link in found.links:
        assert link.reached and link.bytes_per_s, link
        assert len(link.rate_probes) >= 2 and all(p > 0 for p in link.rate_probes), link
        assert len(link.rtt_probes) == PINGS and link.rtt_s in link.rtt_probes
        assert link.measured_t is not None and before <= link.measured_t <= time.time()
