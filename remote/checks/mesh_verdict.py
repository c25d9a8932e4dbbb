"""The full-mesh check in ``corral check``: which address each host's ranks use, the check run
over them (``mesh.py``), and its ``mesh`` items: per host, every peer reached both ways with
the link measured (next to cluster.toml's ``link_gbit``), or per blocked direction, both hosts,
the address and port, the likely cause and its fix."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from remote.checks.host_facts import HostFacts
from remote.checks.mesh import MeshResult, check_mesh
from remote.checks.plan import node_address
from remote.config.cluster import ClusterConfig, HostSection
from remote.events import CheckItem
from remote.hosts.netif import is_ip_literal
from remote.hosts.pool import HostPool
from trainer.balance.links import PairLink, host_links, round_trips

WINDOWS_DOC = "docs/windows.md"


def _item(host: str, ok: bool, detail: str, hint: str = "") -> CheckItem:
    return CheckItem(host=host, name="mesh", ok=ok, detail=detail, hint=hint)


def mesh_addresses(config: ClusterConfig, facts: Mapping[str, HostFacts],
                   master_addr: str) -> dict[str, str]:
    """Per host that can run the test (its Python works), the address its ranks use: what
    its probe found, else the address corral reaches it at."""
    found = {}
    for host in config.hosts:
        host_facts = facts.get(host.name)
        if host_facts is None or not host_facts.python_ok:
            continue
        # A master whose address did not resolve fails its interface check: not tested here.
        fallback = None if host.name == config.master_name else node_address(config, host,
                                                                             master_addr)
        address = host_facts.address or fallback
        if address:
            found[host.name] = address
    return found


def _allow(source: str, address: str, target: str) -> str:
    return (f"allow inbound TCP from {address} on {target} (Linux: `sudo iptables -I INPUT -s "
            f"{address} -p tcp -j ACCEPT`, or `sudo ufw allow from {address} proto tcp`; "
            f"a Windows/WSL2 host: the inbound firewall rule of {WINDOWS_DOC}), so that "
            f"{source}'s ranks can reach {target}'s on the ports its system picks")


def blocked_hint(link: PairLink, links: Sequence[PairLink], ssh_address: str | None,
                 half_open: Mapping[str, frozenset[str]] | None = None) -> str:
    """The likely cause of a blocked direction and its fix (``half_open``: per host, the
    addresses whose connection requests reached it but never completed)."""
    source, target, error = link.source, link.target, link.error.lower()
    addresses = {other.target: other.address for other in links}
    source_address = addresses.get(source, source)
    if "timed out" in error and source_address in (half_open or {}).get(target, ()):
        # The request reached the target, which answered; the answer never arrived: the rule
        # is on the source's side, dropping what the target sends it.
        return (f"a firewall on {source} drops TCP from {target} (the request reached "
                f"{target}; its answer never came back): "
                f"{_allow(target, link.address, source)}")
    loopback = is_ip_literal(link.address) and ipaddress.ip_address(link.address).is_loopback
    if not loopback and ssh_address and is_ip_literal(ssh_address) \
            and ssh_address != link.address:
        return (f"{target} looks NAT'd: corral reaches it at {ssh_address}, but its ranks would "
                f"use {link.address}, which {source} cannot reach. Put {target} on the others' "
                "network (a bridged interface, not NAT), or for a WSL2 host switch to mirrored "
                f"networking ({WINDOWS_DOC}); then run `corral check` again")
    if loopback:
        cause = (f"{target}'s ranks would use the loopback address {link.address}, which only "
                 f"{target} itself reaches; set interface = \"<the interface on the others' "
                 f"network>\" for {target} in cluster.toml, or")
    elif "timed out" in error:
        cause = f"a firewall drops TCP from {source} to {target}"
    elif "refused" in error:
        cause = (f"{target} refuses it (a firewall REJECT rule, or {link.address} is not "
                 f"{target}'s address)")
    elif "unreachable" in error or "no route" in error:
        cause = (f"{source} has no route to {link.address}: {target}'s address is on a network "
                 f"{source} is not on (a wrong interface, or NAT); set interface = \"<the "
                 f"interface on the others' network>\" for {target} in cluster.toml, or")
    else:
        cause = f"the connection from {source} to {target} fails"
    back = next((other for other in links
                 if other.source == target and other.target == source), None)
    if back is not None and back.reached:
        cause += (f" (one way only: {target} reaches {source}; a rule on {target}'s inbound "
                  f"or {source}'s outbound traffic)")
    return f"{cause}: {_allow(source, source_address, target)}"


def _mbit(bytes_per_s: float) -> str:
    return f"{bytes_per_s * 8 / 1e6:,.0f} Mbit/s"


def _reached_item(host: HostSection, links: Sequence[PairLink]) -> CheckItem:
    peers = sorted({link.target for link in links if link.source == host.name})
    own = next((link for link in links if link.target == host.name), None)
    where = f" at {own.address}:{own.port}" if own else ""
    detail = f"reaches {len(peers)} host(s) and is reached from them{where}"
    measured = host_links(links).get(host.name)
    rtt = round_trips(links).get(host.name)
    if measured is not None:
        detail += f"; link measured {_mbit(measured)}"
        if rtt is not None:
            detail += f", round trip {rtt * 1e3:.2f} ms"
    if host.link_gbit is not None:
        detail += f" (cluster.toml: link_gbit = {host.link_gbit:g}"
        detail += ", the estimate uses the measured link)" if measured else ")"
    return _item(host.name, True, detail)


def listen_hint(name: str, error: str, address: str | None, ssh_address: str | None) -> str:
    """The fix of a host whose listener could not start on ``address``: the address corral
    reaches it at (``ssh_address``) is not the host's own when a NAT (or a port forward) sits
    in between, which no interface setting fixes; any other address is the wrong interface."""
    if (address is not None and address == ssh_address and is_ip_literal(address)
            and "assign" in error.lower()):
        return (f"{name} looks NAT'd: corral reaches it at {address}, an address of a NAT or "
                f"port forward in front of it, not of {name} itself, so the other hosts' ranks "
                f"cannot reach its ranks there. Put {name} on the others' network (a bridged "
                f"interface, not NAT), or for a WSL2 host switch to mirrored networking "
                f"({WINDOWS_DOC}); then run `corral check` again")
    return (f"the address corral chose for {name} is not its own: set interface "
            f"= \"<the interface on the others' network>\" for {name} in cluster.toml")


def mesh_items(config: ClusterConfig, result: MeshResult,
               ssh_addresses: Mapping[str, str | None],
               addresses: Mapping[str, str] | None = None) -> list[CheckItem]:
    """Per host: one item when every pair it is in connected both ways, else one failed item
    per blocked direction from it (and one for a listener that could not start)."""
    items = []
    for name, error in result.listen_errors.items():
        items.append(_item(name, False, f"could not listen for the other hosts: {error}",
                           listen_hint(name, error, (addresses or {}).get(name),
                                       ssh_addresses.get(name))))
    blocked = [link for link in result.links if not link.reached]
    for host in config.hosts:
        mine = [link for link in result.links if host.name in (link.source, link.target)]
        if not mine or host.name in result.listen_errors:
            continue
        failed = [link for link in blocked if link.source == host.name]
        for link in failed:
            items.append(_item(
                host.name, False, f"{link.source} → {link.target}: cannot connect to "
                f"{link.address}:{link.port} ({link.error})",
                blocked_hint(link, result.links, ssh_addresses.get(link.target),
                             result.half_open)))
        if not any(host.name in (link.source, link.target) for link in blocked):
            items.append(_reached_item(host, mine))
    return items


async def mesh_check(config: ClusterConfig, pool: HostPool, facts: Mapping[str, HostFacts],
                     master_addr: str, *, hub: str | None = None,
                     ) -> tuple[list[CheckItem], MeshResult | None]:
    """The full-mesh check over the hosts whose Python works (none with fewer than two);
    with ``hub``, only the pairs with that host (``check_mesh``)."""
    addresses = mesh_addresses(config, facts, master_addr)
    if len(addresses) < 2:
        return [], None
    result = await check_mesh(config, pool, addresses, hub=hub)
    ssh = {h.name: node_address(config, h, master_addr) for h in config.hosts}
    return mesh_items(config, result, ssh, addresses), result
