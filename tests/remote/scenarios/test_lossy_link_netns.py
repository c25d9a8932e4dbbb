"""A run over a shaped lossy link: n3 on 50 Mbit/s Wi-Fi (5 ± 2 ms, 1 % loss each way; where
the kernel has no netem, the rate and the loss only: ``netns_links.shaped_as``) trains to exactly
the same losses as the same run's ranks on this machine's loopback (no link, no SSH), and the
hang guard raises no alarm. Two hosts, n1 (the master) and n3: every exchange then crosses the
lossy link, and each host costs a launcher and a rank (a third would add only unshaped links)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from remote.config.read import load_cluster

try:
    import netns
    import netns_links
except ImportError:  # collected as a package module
    from tests.remote import netns, netns_links  # type: ignore[no-redef]
try:
    from runkit import one_process_flags
except ImportError:  # collected as a package
    from tests.remote.runkit import one_process_flags  # type: ignore[no-redef]
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "trainer"))  # its helpers
from trainer_runs import check, launch

pytestmark = [pytest.mark.netns, pytest.mark.sshd, pytest.mark.slow]

# hang_limit: a minute with no step, far beyond what the shaped link or a test beside this one
# costs a step of this size; the alarm that must not come would need that long a stall.
RUN = ('model = "simple_cnn"\ndataset = "synthetic_image"\nsamples = 480\nglobal_batch = 24\n'
       'steps = 12\npolicy = "static"\ncheckpoint_every = 100\nhang_limit = 60\n')
HOSTS = ("n1", "n3")
"""The master, then the host behind the lossy link (``box.nodes[2]``, shaped below)."""


def losses(run_dir: Path) -> list[float]:
    """Rank 0's global loss per step in ``run_dir``."""
    found = set()  # a host's events and corral's local copy of them
    for path in run_dir.rglob("rank-0.jsonl"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "step" and event.get("global_loss") is not None:
                found.add((event["step"], event["global_loss"]))
    return [loss for _, loss in sorted(found)]


def runs(root: Path) -> set[Path]:
    folder = root / "runs"
    return set(folder.iterdir()) if folder.is_dir() else set()


def test_a_run_over_lossy_wifi_completes_exactly_with_no_hang_alarm(
    box: netns.NetnsCluster,
) -> None:
    box.write_cluster_toml(sys.executable, run=RUN, order=HOSTS)
    # The same run (static: an equal split) on as many local ranks, gloo over loopback.
    local = box.root / "local"
    run = load_cluster(box.root / "cluster.toml").run
    check(launch(len(HOSTS), *one_process_flags(run), "--run-dir", str(local)))
    expected = losses(local)
    assert len(expected) == 12
    assert box.nodes[2].name == HOSTS[-1]  # the node shaped here is in the run
    netns_links.shape(box, 2, netns_links.WIFI)
    try:
        before = runs(box.root)
        shaped = netns.corral(box, "run", timeout=420)
    finally:
        netns_links.unshape(box, 2)
    output = shaped.stdout + shaped.stderr
    assert shaped.returncode == 0 and "completed" in output, output[-3000:]
    assert "no step for" not in output and "hang" not in output.lower(), output[-3000:]
    (run_dir,) = {p for p in runs(box.root) - before if (p / "run.json").is_file()}
    assert losses(run_dir) == expected, netns_links.shaped_as(netns_links.WIFI)
    assert box.processes_left() == {}
