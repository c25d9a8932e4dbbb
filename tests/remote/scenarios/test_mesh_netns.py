"""The full-mesh check on namespace hosts: every pair proven both ways before launch.

A firewall on one host that drops inbound TCP (ssh allowed) passes the rendezvous-port check
when that host is the master's peer only as a worker... and hangs Gloo at its first
collective; the mesh check names each blocked direction with both hosts, the address and port,
the cause and the fix, and leaves nothing listening. A one-way block is named as one way.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

try:
    import netns
    import netns_links
except ImportError:  # collected as a package module
    from tests.remote import netns, netns_links  # type: ignore[no-redef]

pytestmark = [pytest.mark.netns, pytest.mark.sshd, pytest.mark.slow]

RUN = ('model = "simple_cnn"\ndataset = "synthetic_image"\nsamples = 480\nglobal_batch = 24\n'
       'steps = 4\npolicy = "static"\ncheckpoint_every = 100\n')


def iptables(box: netns.NetnsCluster, node: int, *rule: str) -> None:
    subprocess.run(["ip", "netns", "exec", box.nodes[node].netns, "iptables", *rule],
                   check=True, capture_output=True, text=True)


@pytest.fixture
def clean(box: netns.NetnsCluster) -> Iterator[netns.NetnsCluster]:
    """The box with no firewall rule and no shaping, before and after the test."""
    def reset() -> None:
        for i in range(len(box.nodes)):
            iptables(box, i, "-F")
            netns_links.unshape(box, i)
    reset()
    try:
        yield box
    finally:
        reset()


def listeners_left(box: netns.NetnsCluster) -> list[str]:
    """TCP listeners in the node namespaces other than sshd's."""
    left = []
    for node in box.nodes:
        done = subprocess.run(["ip", "netns", "exec", node.netns, "ss", "-Hltnp"],
                              capture_output=True, text=True)
        left += [line for line in done.stdout.splitlines() if "sshd" not in line]
    return left


def test_every_pair_reaches_every_other_and_its_link_is_measured(clean: netns.NetnsCluster) -> None:
    box = clean
    box.write_cluster_toml(sys.executable, run=RUN, host_lines={"n2": "link_gbit = 10\n"})
    done = netns.corral(box, "check", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = netns.mesh_text(done.stdout).splitlines()
    for node in box.nodes:
        line = next(row for row in rows if row.startswith(f"{node.name} |"))
        assert f"reaches 2 host(s) and is reached from them at {node.address}:" in line
        assert re.search(r"link measured [\d,]+ Mbit/s", line), line
    assert "link_gbit = 10, the estimate uses the measured link" in netns.mesh_text(done.stdout)
    assert listeners_left(box) == [] and box.processes_left() == {}


def test_a_host_dropping_inbound_tcp_is_named_with_both_hosts_address_and_port(
    clean: netns.NetnsCluster,
) -> None:
    box = clean
    # n3 drops every inbound TCP connection but ssh's (what a default-deny firewall does).
    iptables(box, 2, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
    iptables(box, 2, "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
             "-j", "ACCEPT")
    iptables(box, 2, "-A", "INPUT", "-p", "tcp", "-j", "DROP")
    box.write_cluster_toml(sys.executable, run=RUN)
    done = netns.corral(box, "check", timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    flat = netns.mesh_text(done.stdout)
    n3 = box.nodes[2].address
    for source in ("n1", "n2"):
        assert re.search(rf"{source} → n3: cannot connect to {re.escape(n3)}:\d+ \(timed out\)",
                         flat), flat
    assert "a firewall drops TCP from n1 to n3" in flat
    assert f"allow inbound TCP from {box.nodes[0].address} on n3" in flat
    assert "one way only" in flat  # n3 reaches n1 and n2: its replies are let through
    assert "n3 → n1: cannot" not in flat
    assert listeners_left(box) == [] and box.processes_left() == {}


def test_a_one_sided_drop_is_blamed_on_the_host_whose_rule_drops(
    clean: netns.NetnsCluster,
) -> None:
    # Issue 59 item 4: n3 drops everything from n2. Both directions fail (n3's requests reach
    # n2, whose answers n3 drops); both fixes are n3's, not n2's.
    box = clean
    n2, n3 = box.nodes[1].address, box.nodes[2].address
    iptables(box, 2, "-A", "INPUT", "-s", n2, "-j", "DROP")
    box.write_cluster_toml(sys.executable, run=RUN)
    done = netns.corral(box, "check", timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    flat = netns.mesh_text(done.stdout)
    assert "n2 → n3: cannot" in flat and "n3 → n2: cannot" in flat, flat
    assert "a firewall on n3 drops TCP from n2 (the request reached n2" in flat, flat
    assert f"allow inbound TCP from {n2} on n3" in flat
    assert f"allow inbound TCP from {n3} on n2" not in flat  # the fix never points at n2
    assert listeners_left(box) == [] and box.processes_left() == {}


def test_a_one_way_block_is_named_as_one_way(clean: netns.NetnsCluster) -> None:
    box = clean
    # n1 may not open connections to n2; n2 to n1 is allowed (its replies are ESTABLISHED).
    iptables(box, 0, "-A", "OUTPUT", "-d", box.nodes[1].address, "-p", "tcp",
             "-m", "conntrack", "--ctstate", "NEW", "-j", "REJECT")
    box.write_cluster_toml(sys.executable, run=RUN)
    done = netns.corral(box, "check", timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    flat = netns.mesh_text(done.stdout)
    assert re.search(rf"n1 → n2: cannot connect to {re.escape(box.nodes[1].address)}:\d+", flat)
    assert "one way only: n2 reaches n1" in flat
    assert "n2 → n1: cannot" not in flat and "n1 → n3: cannot" not in flat
    assert listeners_left(box) == [] and box.processes_left() == {}


def test_a_run_is_refused_before_launch_when_a_pair_is_blocked(clean: netns.NetnsCluster) -> None:
    box = clean
    iptables(box, 1, "-A", "INPUT", "-s", box.nodes[2].address, "-p", "tcp", "-j", "DROP")
    box.write_cluster_toml(sys.executable, run=RUN)
    done = netns.corral(box, "run", timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "n3 → n2: cannot connect" in netns.mesh_text(output), output[-3000:]
    assert "launching" not in output
    assert listeners_left(box) == [] and box.processes_left() == {}


def test_a_host_behind_nat_is_named_as_natd(clean: netns.NetnsCluster) -> None:
    # Last in this module: the NAT'd host stays in the box. It reaches every host (its router
    # masquerades it) and so passes the rendezvous-port check; only its router reaches its
    # address.
    box = clean
    natted = netns.add_natted_host(box, router=2)
    box.write_cluster_toml(sys.executable, run=RUN)
    done = netns.corral(box, "check", timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    text = netns.mesh_text(done.stdout)
    for source in ("n1", "n2"):
        assert f"{source} → {natted.name}: cannot connect to 10.88.0.2:" in text, text
    assert (f"{natted.name} looks NAT'd: corral reaches it at {box.nodes[2].address}, but its "
            "ranks would use 10.88.0.2") in text
    assert f"{natted.name} → n1: cannot" not in text and "n3 → n9: cannot" not in text
    rows = netns.check_rows(done.stdout)
    assert any(r[0] == natted.name and r[1] == "rendezvous-port" and r[2] == "ok" for r in rows)
    assert listeners_left(box) == [] and box.processes_left() == {}
