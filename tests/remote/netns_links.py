"""Shaped links for the cluster in a box (``netns.py``): a node's link given the rate, delay,
jitter and loss of a ``LinkProfile`` with ``tc`` on both ends of its veth (netem, or tbf and
iptables where the kernel has no netem), and made the bare bridge's again.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass

try:
    from netns import NetnsCluster, _ip  # the cluster in a box
except ImportError:  # imported as a package module
    from tests.remote.netns import NetnsCluster, _ip


@dataclass(frozen=True)
class LinkProfile:
    """A link as ``tc netem`` shapes it: its rate, one-way delay (with jitter) and loss."""

    name: str
    rate_mbit: float
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    def netem_args(self) -> list[str]:
        """The words after ``tc qdisc replace dev IF root netem``."""
        words = []
        if self.delay_ms or self.jitter_ms:
            words += ["delay", f"{self.delay_ms}ms"]
            if self.jitter_ms:
                words.append(f"{self.jitter_ms}ms")
        if self.loss_pct:
            words += ["loss", f"{self.loss_pct}%"]
        # netem's own queue (1000 packets by default) is far too short for a slow link with
        # delay: tail drops on top of the profile's loss would make the link lossier than named.
        return [*words, "rate", f"{self.rate_mbit}mbit", "limit", "100000"]


GIGABIT = LinkProfile("1 Gbit/s", 1000.0)
FAST_ETHERNET = LinkProfile("100 Mbit/s", 100.0)
WIFI = LinkProfile("50 Mbit/s Wi-Fi", 50.0, delay_ms=5.0, jitter_ms=2.0, loss_pct=1.0)
PROFILES = (GIGABIT, FAST_ETHERNET, WIFI)


@functools.cache
def netem_available() -> bool:
    """Whether this kernel has netem (some VM kernels ship without ``sch_netem``), tried on a
    dummy link in a namespace of its own. Where it has none, ``shape`` sets the rate with tbf
    and the loss with iptables' ``statistic`` match, and leaves delay and jitter out
    (``shaped_as`` says so)."""
    probe = f"crlnetem{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError:
        return False
    try:
        _ip("-n", probe, "link", "add", "probe0", "type", "dummy")
        done = subprocess.run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev",
                               "probe0", "root", "netem"], capture_output=True)
        return done.returncode == 0
    except subprocess.CalledProcessError:
        return False
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)


def shaped_as(link: LinkProfile) -> str:
    """What ``shape`` really applies here for ``link`` (for test and bench output)."""
    if netem_available() or not (link.delay_ms or link.jitter_ms):
        return link.name
    return f"{link.name} (no netem in this kernel: rate and loss only, no delay or jitter)"


def _tbf_args(link: LinkProfile) -> list[str]:
    # A bucket of 4 ms of the rate (at least 16 KB) and a queue of 100 ms: a TCP flow fills
    # the link without tail drops beyond what a real switch port would make.
    burst = max(int(link.rate_mbit * 1e6 / 8 / 250), 16384)
    return ["tbf", "rate", f"{link.rate_mbit}mbit", "burst", str(burst), "latency", "100ms"]


def _loss_rules(netns: str, loss_pct: float, action: str) -> None:
    for chain in ("INPUT", "OUTPUT"):
        rule = [chain, "-m", "statistic", "--mode", "random", "--probability",
                f"{loss_pct / 100:.4f}", "-j", "DROP"]
        subprocess.run(["ip", "netns", "exec", netns, "iptables", action, *rule],
                       capture_output=True, text=True, check=action == "-I")


def _link_ends(box: NetnsCluster, host: int) -> list[tuple[str, str]]:
    node = box.nodes[host]
    return [(node.netns, node.ifname), (box.ctl_netns, f"{node.ifname}b")]


def shape(box: NetnsCluster, host: int, link: LinkProfile) -> None:
    """Shape both directions of node ``host``'s link (an index into ``box.nodes``): a qdisc on
    the node's end of its veth (what it sends) and on the bridge's end (what it receives).
    Delay and jitter apply per direction, so a round trip carries twice the delay; loss too
    (each direction loses ``loss_pct``). See ``netem_available`` for kernels without netem."""
    unshape(box, host)
    qdisc = ["netem", *link.netem_args()] if netem_available() else _tbf_args(link)
    for netns, ifname in _link_ends(box, host):
        subprocess.run(["ip", "netns", "exec", netns, "tc", "qdisc", "replace", "dev", ifname,
                        "root", *qdisc], check=True, capture_output=True, text=True)
    if not netem_available() and link.loss_pct:
        _loss_rules(box.nodes[host].netns, link.loss_pct, "-I")


def unshape(box: NetnsCluster, host: int) -> None:
    """Take ``shape``'s qdiscs (and loss rules) off node ``host``'s link again."""
    for netns, ifname in _link_ends(box, host):
        subprocess.run(["ip", "netns", "exec", netns, "tc", "qdisc", "del", "dev", ifname,
                        "root"], capture_output=True)
    if not netem_available():
        for pct in {link.loss_pct for link in PROFILES if link.loss_pct}:
            _loss_rules(box.nodes[host].netns, pct, "-D")
