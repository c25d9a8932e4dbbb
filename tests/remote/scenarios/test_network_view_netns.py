"""The console's network view on the cluster in a box: n3 behind a shaped 100 Mbit/s link has
the slowest links (the medians of their probes), the host behind it sits out as the run's
balancer decided, in the balancer's own figures, and the bottleneck of the exchange is then
the pair still in it (docs/console.md, "Network")."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import netns
    import netns_links
except ImportError:  # collected as a package module
    from tests.remote import netns, netns_links  # type: ignore[no-redef]

pytestmark = [pytest.mark.netns, pytest.mark.sshd, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
# The wide MLP of tests/trainer/scenarios/test_active_set.py: its gradient (about 33 MB) takes
# seconds
# over 100 Mbit/s, far more than a third of the batch's compute, so the balancer benches the
# host behind that link. The batch is large enough that the two hosts on unshaped links save
# more compute together than their exchange costs, even on a loaded machine (at 24 samples
# a loaded CI machine once benched n1 too, rightly by the balancer's own figures).
RUN = ('task = "tasks/curve.py:build"\ntask_options = { hidden = 2880, samples = 2048 }\n'
       'global_batch = 240\nsplit = [80, 80, 80]\npolicy = "dynamic"\nrebalance_every = 5\n'
       'steps = 100000\nlr = 0.0005\nseed = 3\ncheckpoint_every = 1000\n')

FOLLOW = """
import asyncio, json, sys
from console.model.run import RunModel
from console.model.topology import run_topology
from remote.api import RankEvent, load_cluster
from remote.run.controller import SshRunController
from trainer.events import RebalanceEvent

async def main():
    controller = SshRunController(load_cluster(sys.argv[1]))
    try:
        handle = await controller.start()
        model = RunModel.of_run(handle.run_id)
        async for event in handle.events():
            model.apply(event)
            inner = event.event if isinstance(event, RankEvent) else None
            if isinstance(inner, RebalanceEvent) and inner.split[2] == 0:
                break
        stop = await handle.stop(grace_s=20.0)
    finally:
        await controller.aclose()
    top = run_topology(model)
    print(json.dumps({"clean": stop.clean, "state": model.state, "split": list(model.split),
                      "rank_hosts": {r: row.host for r, row in model.ranks.items()},
                      "limiting": [top.limiting.a, top.limiting.b] if top.limiting else None,
                      "slowest": [[v.a, v.b, v.median * 8 / 1e6, v.in_exchange]
                                  for v in sorted((v for v in top.links if v.median),
                                                  key=lambda v: v.median)][0],
                      "badges": {b.host: [b.sits_out, b.text] for b in top.hosts}}))

asyncio.run(main())
"""


def test_the_shaped_link_limits_and_the_host_behind_it_sits_out(
        box: netns.NetnsCluster) -> None:
    (box.root / "tasks").mkdir(exist_ok=True)
    shutil.copy(REPO / "examples" / "tasks" / "curve.py", box.root / "tasks" / "curve.py")
    toml = box.write_cluster_toml(sys.executable, run=RUN)
    _, env = netns.corral_command(box)  # its environment: this checkout, HOME in the box
    argv = box.in_ctl(sys.executable, "-c", FOLLOW, str(toml))
    netns_links.shape(box, 2, netns_links.FAST_ETHERNET)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=500, cwd=REPO,
                              env=env)
    finally:
        netns_links.unshape(box, 2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["clean"] and box.processes_left() == {}
    # n3's shaped link is the mesh's slowest, but n3 is benched: the exchange's bottleneck is
    # the pair still in it.
    a, b, mbit, in_exchange = seen["slowest"]
    assert "n3" in (a, b) and mbit < 110 and not in_exchange, seen
    benched, text = seen["badges"]["n3"]
    assert benched and text.startswith("sits out: ") and "(balancer, step" in text, seen
    # The other hosts' badges say what the run's split says: a host sits out exactly when all
    # its ranks have no share, and the run trains on at least one of them.
    shares = {host: 0 for host in seen["rank_hosts"].values()}
    for rank, host in seen["rank_hosts"].items():
        shares[host] += seen["split"][int(rank)]
    assert shares["n3"] == 0 and shares["n1"] + shares["n2"] == 240, seen
    # The bottleneck is the pair still exchanging; a loaded machine may bench n1 or n2 with n3,
    # and then one host trains alone and nothing limits an exchange.
    exchanging = sorted(host for host in ("n1", "n2") if shares[host])
    assert (sorted(seen["limiting"]) if seen["limiting"] else None) == (
        exchanging if len(exchanging) == 2 else None), seen
    for host in ("n1", "n2"):
        assert seen["badges"][host][0] == (shares[host] == 0), seen
