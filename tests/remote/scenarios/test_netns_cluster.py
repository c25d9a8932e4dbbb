"""Cluster in a box: three hosts in network namespaces, reached over SSH, training over Gloo.

Every namespace resolves the shared hostname to 127.0.0.1 (one /etc/hosts), so Gloo would
advertise loopback and the ranks could not reach each other: the run completes only if corral
sets GLOO_SOCKET_IFNAME to the right interface on every host by itself (the cluster.toml names
no interface). Skips unless running as root with ``ip netns``, sshd and ssh-keygen.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import netns
except ImportError:  # collected as a package module
    from tests.remote import netns  # type: ignore[no-redef]

pytestmark = [pytest.mark.netns, pytest.mark.sshd, pytest.mark.slow]

RUN = ('model = "simple_cnn"\ndataset = "synthetic_image"\nsamples = 480\nglobal_batch = 24\n'
       'steps = 6\npolicy = "static"\ncheckpoint_every = 100\n')


corral = netns.corral


def test_namespaces_resolve_the_hostname_to_loopback(box: netns.NetnsCluster) -> None:
    # The premise of the run test: without an interface, Gloo would pick loopback here.
    done = subprocess.run(["ip", "netns", "exec", box.nodes[1].netns, "sh", "-c",
                           "getent ahosts \"$(hostname)\""], capture_output=True, text=True)
    assert done.stdout.split()[0].startswith("127."), done.stdout


def test_check_selects_each_hosts_veth(box: netns.NetnsCluster) -> None:
    box.write_cluster_toml(sys.executable, run=RUN)
    done = corral(box, "check", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    master, *workers = box.nodes
    assert f"{master.ifname} (holds {master.address})" in done.stdout
    for node in workers:
        assert f"{node.ifname} (routes to {master.address})" in done.stdout
        assert f"reaches {master.address}:" in done.stdout


def ends(run_dir: Path) -> list[tuple[int, str, int]]:
    """Every rank's (rank, status, step) at its end, from the run's local copy of events."""
    found = set()
    for path in run_dir.rglob("rank-*.jsonl"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "end":
                found.add((event["rank"], event["status"], event["step"]))
    return sorted(found)


def test_the_box_refuses_a_run_whose_ranks_would_advertise_loopback(
    box: netns.NetnsCluster,
) -> None:
    # The control experiment: the same run with Gloo forced onto loopback cannot form its mesh,
    # so the run below cannot pass unless the selected interfaces are right; the full-mesh
    # check finds it before anything starts (remote/checks/mesh.py).
    box.write_cluster_toml(sys.executable, run=RUN, interface="lo")
    done = corral(box, "run", timeout=420)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-4000:]
    flat = netns.mesh_text(output)
    assert "n1 → n2: cannot connect to 127.0.0.1:" in flat, output[-4000:]
    assert "loopback address 127.0.0.1" in flat, output[-4000:]
    assert "launching" not in output
    assert box.processes_left() == {}


def test_three_hosts_train_over_auto_selected_interfaces_and_survive_a_link_cut(
    box: netns.NetnsCluster,
) -> None:
    # Three hosts train over Gloo on the interfaces corral selected (cluster.toml names none).
    # n2's link (the bridge side of its veth) goes down mid-run for longer than the tail's
    # silence limit (20 s): corral says it is reconnecting; once the link is back, training
    # and the event stream go on and the run completes. The cut lasts until corral says so: a
    # test's load beside it only lengthens it a little past 20 s, well under [ssh] lost_after
    # (60 s), past which n2 would count as lost. Every host emulates a device 4 times slower
    # (a sleep after each step's compute, trainer/step/slowdown.py): the steps after the first
    # line then last at least as long as 300 steps at full speed did, on a third of their CPU.
    steps = 100
    slow = {node.name: "slowdown = 4.0\n" for node in box.nodes}
    box.write_cluster_toml(sys.executable, run=RUN.replace("steps = 6", f"steps = {steps}"),
                           host_lines=slow)
    port = f"{box.nodes[1].ifname}b"
    before = set((box.root / "runs").glob("*/run.json"))
    proc = netns.corral_process(box, "run")
    lines: list[str] = []
    cut = restored = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the follower's own lines say when to act
            lines.append(line)
            if not cut and line.startswith("step ") and f"/{steps}" in line:
                subprocess.run(box.in_ctl("ip", "link", "set", port, "down"), check=True)
                cut = True
            elif cut and not restored and line.startswith("n2: unreachable") \
                    and "reconnecting" in line:
                subprocess.run(box.in_ctl("ip", "link", "set", port, "up"), check=True)
                restored = True
        code = proc.wait(timeout=60)
    finally:
        subprocess.run(box.in_ctl("ip", "link", "set", port, "up"), capture_output=True)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines)
    assert cut and restored, output[-4000:]
    assert code == 0 and "completed" in output, output[-4000:]
    assert "n2: running: reconnected after" in output, output[-4000:]
    # Every rank of every host ran all steps and ended completed (the local copy of events).
    (record,) = set((box.root / "runs").glob("*/run.json")) - before
    assert ends(record.parent) == [(0, "completed", steps), (1, "completed", steps),
                                   (2, "completed", steps)]
    assert box.processes_left() == {}
