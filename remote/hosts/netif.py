"""Which network interface Gloo and NCCL should use on a host.

Left to themselves, Gloo and NCCL pick the interface that the host's own hostname resolves to,
which is often the loopback (``/etc/hosts``) or a container bridge: the other hosts then cannot
reach this rank and the mesh fails with "connection refused". corral sets
``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME`` to the interface through which the other hosts
reach this one:

- on a worker, the interface that routes to the master (``ip -o route get <addr>`` → ``dev``);
- on the master, the interface that holds the master address (``ip -o addr show``), not the
  loopback route that ``ip route get`` reports for an address of the machine itself.

The parsing functions are pure so that they can be tested on captured ``ip`` output.
"""

from __future__ import annotations

import ipaddress
import itertools
import shlex

from remote.hosts.transport import Transport

IP_TIMEOUT_S = 10.0
"""Seconds allowed for each ``ip`` / ``getent`` command on a host."""


def is_ip_literal(address: str) -> bool:
    """True when ``address`` is an IPv4 or IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def parse_route_get(output: str) -> str | None:
    """The ``dev`` of the first route in ``ip -o route get ADDR`` output, None if absent.

    >>> parse_route_get("10.77.0.1 dev veth1 src 10.77.0.2 uid 0 \\\\    cache ")
    'veth1'
    """
    for line in output.splitlines():
        words = line.split()
        for key, value in itertools.pairwise(words):
            if key == "dev":
                return value
    return None


def parse_addr_show(output: str, address: str) -> str | None:
    """The interface that holds ``address`` in ``ip -o addr show`` output, None if none does.

    Each line reads ``<index>: <ifname> inet[6] <addr>/<prefix> ...``. An interface name can
    carry a ``@peer`` suffix (veth pairs), which is not part of the name Gloo wants.
    """
    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        return None
    for line in output.splitlines():
        words = line.split()
        if len(words) < 4 or words[2] not in ("inet", "inet6"):
            continue
        held = words[3].split("/", 1)[0]
        try:
            if ipaddress.ip_address(held) == wanted:
                return words[1].split("@", 1)[0]
        except ValueError:
            continue
    return None


def interface_script(master_addr: str, *, is_master: bool) -> str:
    """One POSIX shell command that prints ``resolved <address>`` (the master address as this
    host resolves it, IPv4 first; empty if it cannot) and then the ``ip`` output to parse:
    ``ip -o addr show`` on the master, ``ip -o route get <address>`` on a worker."""
    if is_ip_literal(master_addr):
        resolve = f"a={shlex.quote(master_addr)}"
    else:
        name = shlex.quote(master_addr)
        first_field = "awk 'NR==1{print $1}'"
        resolve = (f"a=$(getent ahostsv4 {name} 2>/dev/null | {first_field}); "
                   f'[ -n "$a" ] || a=$(getent ahosts {name} 2>/dev/null | {first_field})')
    query = "ip -o addr show" if is_master else 'ip -o route get "$a"'
    return f'{resolve}; echo "resolved $a"; [ -z "$a" ] || {query}'


def parse_interface(output: str, *, is_master: bool) -> tuple[str | None, str | None]:
    """``(resolved address, interface)`` from ``interface_script``'s output; None for what
    it could not tell (an unresolvable name; no ``ip``, or no interface in its output)."""
    lines = output.splitlines()
    head = lines[0].split() if lines else []
    if len(head) != 2 or head[0] != "resolved" or not is_ip_literal(head[1]):
        return None, None
    address, rest = head[1], "\n".join(lines[1:])
    return address, parse_addr_show(rest, address) if is_master else parse_route_get(rest)


async def select_interface(
    transport: Transport, *, master_addr: str, is_master: bool
) -> str | None:
    """The interface the other hosts reach ``transport``'s host through, None if unknown.

    None when ``ip`` is missing or its output names no interface; callers then leave the
    choice to Gloo/NCCL and ``corral check`` shows a warning.
    """
    script = interface_script(master_addr, is_master=is_master)
    done = await transport.run(script, timeout=IP_TIMEOUT_S)
    return parse_interface(done.stdout, is_master=is_master)[1]


def parse_route_source(output: str) -> str | None:
    """The ``src`` address of the first route in ``ip -o route get ADDR`` output: this host's
    address on the interface that routes there (the address its ranks advertise)."""
    for line in output.splitlines():
        for key, value in itertools.pairwise(line.split()):
            if key == "src" and is_ip_literal(value):
                return value
    return None


def interface_address(addr_show: str, interface: str) -> str | None:
    """The first address (IPv4 before IPv6) ``interface`` holds in ``ip -o addr show`` output."""
    held: list[str] = []
    for line in addr_show.splitlines():
        words = line.split()
        if len(words) >= 4 and words[1].split("@", 1)[0] == interface \
                and words[2] in ("inet", "inet6"):
            held.append(words[3].split("/", 1)[0])
    held.sort(key=lambda address: ":" in address)
    return held[0] if held else None


def run_address(interface_output: str, links_output: str, *, is_master: bool,
                interface: str | None) -> str | None:
    """The address this host's ranks advertise (what the others must reach): the address of
    cluster.toml's ``interface`` when it names one (``links_output``: ``ip -o addr show``),
    else the master address on the master and the source address of the route to the master
    on a worker (``interface_script``'s output); None when it cannot be told."""
    if interface is not None:
        return interface_address(links_output, interface)
    lines = interface_output.splitlines()
    resolved, _ = parse_interface(interface_output, is_master=is_master)
    if is_master or resolved is None:
        return resolved
    return parse_route_source("\n".join(lines[1:]))
