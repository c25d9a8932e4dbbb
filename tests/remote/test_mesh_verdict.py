"""The full-mesh check's pure parts: the address a host's ranks use, the links it measured as
the estimate reads them, and the words for a blocked direction."""

from __future__ import annotations

from remote.checks.estimate_facts import EstimateProbe, host_link
from remote.checks.mesh import ring_order, round_seconds
from remote.checks.mesh_verdict import blocked_hint
from remote.config.cluster import HostSection
from remote.hosts.netif import parse_route_source, run_address
from trainer.balance.links import (
    PairLink,
    host_links,
    pair_links_from_json,
    pair_links_json,
    pair_throughput,
)

ROUTE = "10.77.0.1 via 10.88.0.1 dev eth0 src 10.88.0.2 uid 0 \\    cache "
ADDRS = ("1: lo    inet 127.0.0.1/8 scope host lo\n"
         "2: eth0@if5    inet6 fe80::1/64 scope link\n"
         "2: eth0@if5    inet 192.168.1.7/24 brd 192.168.1.255 scope global eth0\n")


def link(source: str, target: str, mbit: float | None, *, reached: bool = True,
         error: str = "") -> PairLink:
    address = f"10.0.0.{'abcd'.index(target) + 1}"
    return PairLink(source=source, target=target, address=address, port=4000,
                    reached=reached, error=error, rtt_s=0.001 if mbit else None,
                    bytes_per_s=mbit * 1e6 / 8 if mbit else None)


def test_a_worker_advertises_the_source_address_of_its_route_to_the_master() -> None:
    assert parse_route_source(ROUTE) == "10.88.0.2"
    worker = run_address(f"resolved 10.77.0.1\n{ROUTE}", "", is_master=False, interface=None)
    assert worker == "10.88.0.2"
    master = run_address("resolved 10.77.0.1\n" + ADDRS, "", is_master=True, interface=None)
    assert master == "10.77.0.1"
    named = run_address("resolved 10.77.0.1\n", ADDRS, is_master=False, interface="eth0")
    assert named == "192.168.1.7"  # IPv4 before IPv6
    assert run_address("resolved \n", "", is_master=False, interface=None) is None


def test_a_hosts_link_is_its_best_pair_each_pair_its_slower_direction() -> None:
    links = [link("a", "b", 900), link("b", "a", 800), link("a", "c", 50), link("c", "a", 60),
             link("b", "c", 45), link("c", "b", 55)]
    pairs = pair_throughput(links)
    assert round(pairs["a", "b"] * 8 / 1e6) == 800 and round(pairs["b", "c"] * 8 / 1e6) == 45
    found = {name: round(rate * 8 / 1e6) for name, rate in host_links(links).items()}
    assert found == {"a": 800, "b": 800, "c": 50}
    assert pair_links_from_json(pair_links_json(links)) == tuple(links)
    # A pair measured one way only says nothing of the host's link.
    assert host_links([link("a", "b", 900)]) == {}


def test_the_estimate_takes_the_measured_link_over_link_gbit() -> None:
    host = HostSection(name="a", address="10.0.0.1", link_gbit=10.0)
    probe = EstimateProbe(link_mbit={"eth0": 1000.0})
    assert host_link(host, "eth0", probe, measured=6e6) == 6e6
    assert host_link(host, "eth0", probe) == 10e9 / 8
    plain = HostSection(name="a", address="10.0.0.1")
    assert host_link(plain, "eth0", probe) == 1000e6 / 8


def test_a_blocked_direction_names_its_cause_and_fix() -> None:
    dropped = link("a", "b", None, reached=False, error="timed out")
    links = [dropped, link("b", "a", 900)]
    hint = blocked_hint(dropped, links, ssh_address="10.0.0.2")
    assert hint.startswith("a firewall drops TCP from a to b (one way only: b reaches a")
    assert "allow inbound TCP from 10.0.0.1 on b" in hint
    natted = blocked_hint(dropped, links, ssh_address="203.0.113.9")
    assert natted.startswith("b looks NAT'd: corral reaches it at 203.0.113.9, but its ranks "
                             "would use 10.0.0.2")
    refused = link("a", "b", None, reached=False, error="[Errno 111] Connection refused")
    assert "b refuses it" in blocked_hint(refused, [refused], ssh_address="10.0.0.2")


def test_rounds_pair_each_host_with_one_sender_and_one_receiver() -> None:
    names = ["a", "b", "c", "d"]
    rounds = {me: ring_order(names, me) for me in names}
    for k in range(3):
        receivers = [rounds[me][k] for me in names]
        assert sorted(receivers) == names  # every host receives from exactly one per round
    assert round_seconds(15) * 15 <= 8.0 + 1e-9 and round_seconds(1) == 1.0


def test_a_natd_master_is_named_as_nat_not_as_a_wrong_address() -> None:
    # Issue 59 item 4: the master's listener could not bind the address corral reaches it at
    # (a NAT or a port forward owns it): that reads "NAT'd", not "not its own address".
    from pathlib import Path

    from remote.checks.mesh import MeshResult
    from remote.checks.mesh_verdict import mesh_items
    from remote.config.cluster import ClusterConfig, ClusterSection

    hosts = (HostSection(name="m", address="203.0.113.7"),
             HostSection(name="w", address="10.0.0.2"))
    config = ClusterConfig(path=Path("cluster.toml"), hosts=hosts,
                           cluster=ClusterSection(name="c", master="m", run_root="/runs"))
    error = "[Errno 99] Cannot assign requested address"
    result = MeshResult(links=(), listen_errors={"m": error}, seconds=1.0)
    ssh = {"m": "203.0.113.7", "w": "10.0.0.2"}
    (row,) = mesh_items(config, result, ssh, {"m": "203.0.113.7", "w": "10.0.0.2"})
    assert (row.host, row.ok) == ("m", False)
    assert row.hint.startswith("m looks NAT'd: corral reaches it at 203.0.113.7")
    # An address of the host's own choosing that it does not hold: the interface is wrong.
    (row,) = mesh_items(config, result, ssh, {"m": "192.168.5.5", "w": "10.0.0.2"})
    assert row.hint.startswith("the address corral chose for m is not its own")
