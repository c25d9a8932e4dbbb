"""Interface selection: parsing captured ``ip`` output, and the choice made on a host."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from remote.config.cluster import HostSection
from remote.hosts.command_errors import CompletedCommand
from remote.hosts.netif import (
    is_ip_literal,
    parse_addr_show,
    parse_interface,
    parse_route_get,
    select_interface,
)

# Captured on hosts: a worker in a network namespace on a bridge, a host with a default route,
# and the master asking for a route to its own address (the kernel says "local ... dev lo").
ROUTE_VIA_VETH = "10.77.0.1 dev veth-c2 src 10.77.0.2 uid 0 \\    cache \n"
ROUTE_VIA_GATEWAY = "8.8.8.8 via 192.0.2.1 dev eth0 src 192.0.2.2 uid 0 \\    cache \n"
ROUTE_TO_SELF = "local 10.77.0.1 dev lo table local src 10.77.0.1 uid 0 \\    cache <local> \n"

ADDR_SHOW = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host \\       valid_lft forever preferred_lft forever
3: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever
7: veth-c1@if8    inet 10.77.0.1/24 scope global veth-c1\\       valid_lft forever
7: veth-c1@if8    inet6 fe80::1c2d:3ff:fe4e:5f60/64 scope link \\       valid_lft forever
9: eth1    inet6 fd00::2/64 scope global nodad \\       valid_lft forever preferred_lft forever
"""


def test_route_get_names_the_outgoing_device() -> None:
    assert parse_route_get(ROUTE_VIA_VETH) == "veth-c2"
    assert parse_route_get(ROUTE_VIA_GATEWAY) == "eth0"


def test_route_get_without_a_device_is_unknown() -> None:
    assert parse_route_get("") is None
    assert parse_route_get("RTNETLINK answers: Network is unreachable") is None


def test_addr_show_finds_the_interface_holding_the_address() -> None:
    assert parse_addr_show(ADDR_SHOW, "10.77.0.1") == "veth-c1"  # @peer suffix dropped
    assert parse_addr_show(ADDR_SHOW, "172.17.0.1") == "docker0"
    assert parse_addr_show(ADDR_SHOW, "127.0.0.1") == "lo"
    assert parse_addr_show(ADDR_SHOW, "fd00::2") == "eth1"
    assert parse_addr_show(ADDR_SHOW, "fd00:0:0::2") == "eth1"  # same address, other spelling


def test_addr_show_for_an_address_not_held_is_unknown() -> None:
    assert parse_addr_show(ADDR_SHOW, "10.77.0.9") is None
    assert parse_addr_show(ADDR_SHOW, "not-an-ip") is None


def test_parse_interface_reads_the_resolved_address_then_the_ip_output() -> None:
    assert parse_interface("resolved 10.77.0.1\n" + ROUTE_VIA_VETH, is_master=False) == (
        "10.77.0.1", "veth-c2")
    assert parse_interface("resolved 10.77.0.1\n" + ADDR_SHOW, is_master=True) == (
        "10.77.0.1", "veth-c1")
    assert parse_interface("resolved \n", is_master=False) == (None, None)  # unresolvable
    assert parse_interface("resolved 10.77.0.1\n", is_master=True) == ("10.77.0.1", None)
    assert parse_interface("", is_master=True) == (None, None)
    assert is_ip_literal("10.0.0.5") and is_ip_literal("::1") and not is_ip_literal("box")


class StubbedShell:
    """A transport that runs commands in ``sh`` with stand-ins for ``ip`` and ``getent`` that
    print captured output (and log their arguments)."""

    def __init__(self, tmp: Path, *, ip: str | None, getent: str = "") -> None:
        self.host = HostSection(name="h", address="h.example")
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.log = tmp / "calls"
        stubs = {"getent": getent} if ip is None else {"getent": getent, "ip": ip}
        for name, out in stubs.items():
            (self.bin / name).write_text(
                f'#!/bin/sh\necho "{name} $*" >> {self.log}\ncat <<\'EOF\'\n{out}EOF\n')
            (self.bin / name).chmod(0o755)
        for tool in ("awk", "cat", "touch"):  # touch: an injection would work here
            (self.bin / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    async def run(self, command: str, *, check: bool = False, timeout: float = 60.0,
                  input: bytes | None = None) -> CompletedCommand:
        done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                              env={"PATH": str(self.bin)}, timeout=timeout, cwd=self.bin)
        return CompletedCommand(command=command, exit_status=done.returncode,
                                stdout=done.stdout, stderr=done.stderr)

    async def stream(self, command: str) -> AsyncIterator[str]:
        raise AssertionError("select_interface never streams")
        yield ""

    async def close(self) -> None:
        pass


async def test_the_master_uses_the_interface_holding_its_address_not_loopback(
    tmp_path: Path,
) -> None:
    shell = StubbedShell(tmp_path, ip=ADDR_SHOW)
    chosen = await select_interface(shell, master_addr="10.77.0.1", is_master=True)
    assert chosen == "veth-c1"
    assert shell.calls() == ["ip -o addr show"]


async def test_a_worker_uses_the_interface_that_routes_to_the_master(tmp_path: Path) -> None:
    shell = StubbedShell(tmp_path, ip=ROUTE_VIA_VETH)
    chosen = await select_interface(shell, master_addr="10.77.0.1", is_master=False)
    assert chosen == "veth-c2"
    assert shell.calls() == ["ip -o route get 10.77.0.1"]


async def test_a_master_name_is_resolved_on_the_host_itself(tmp_path: Path) -> None:
    shell = StubbedShell(tmp_path, ip=ROUTE_VIA_VETH,
                         getent="10.77.0.1       STREAM master\n10.77.0.1       DGRAM\n")
    chosen = await select_interface(shell, master_addr="master", is_master=False)
    assert chosen == "veth-c2"
    assert shell.calls() == ["getent ahostsv4 master", "ip -o route get 10.77.0.1"]


async def test_an_unresolvable_master_name_asks_ip_nothing(tmp_path: Path) -> None:
    shell = StubbedShell(tmp_path, ip=ROUTE_VIA_VETH)
    assert await select_interface(shell, master_addr="nohost", is_master=False) is None
    assert not [c for c in shell.calls() if c.startswith("ip")]


@pytest.mark.parametrize("is_master", [True, False])
async def test_without_ip_the_interface_is_unknown(tmp_path: Path, is_master: bool) -> None:
    shell = StubbedShell(tmp_path, ip=None)
    assert await select_interface(shell, master_addr="10.77.0.1", is_master=is_master) is None


async def test_a_hostile_master_address_is_one_argument(tmp_path: Path) -> None:
    shell = StubbedShell(tmp_path, ip=ROUTE_VIA_VETH)
    await select_interface(shell, master_addr="x;touch pwned;$(touch pwned)", is_master=False)
    assert shell.calls() == ["getent ahostsv4 x;touch pwned;$(touch pwned)",
                             "getent ahosts x;touch pwned;$(touch pwned)"]
    assert not list(tmp_path.rglob("pwned"))
