"""Cluster in a box: network namespaces on a bridge, each with its own address and sshd.

Layout (every address lives inside a namespace created here; the root namespace's network is
never touched, and nothing routes anywhere but the private bridge):

    <prefix>-ctl   the "laptop": the bridge <prefix>br (10.77.0.254/24); corral runs here
    <prefix>-n1    10.77.0.1/24 on <prefix>-1, sshd on port 22     (the master)
    <prefix>-n2    10.77.0.2/24 on <prefix>-2, sshd on port 22
    <prefix>-n3    10.77.0.3/24 on <prefix>-3, sshd on port 22

The namespaces share the file system, /etc/hosts and the hostname, so a rank's hostname
resolves to 127.0.0.1 in every namespace: Gloo then advertises loopback and the hosts cannot
reach each other unless GLOO_SOCKET_IFNAME names the veth. ``NetnsCluster.close`` kills every
process left in the namespaces (and only those), then deletes the namespaces, which removes
the veth pairs and the bridge with them. ``netns_links.py`` shapes a node's link (rate, delay,
loss).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

try:
    from conftest import _keygen  # the sshd fixture's key generation
except ImportError:  # imported as a package module
    from tests.remote.conftest import _keygen

SUBNET = "10.77.0"
CTL_ADDRESS = f"{SUBNET}.254"
SSHD = "/usr/sbin/sshd"
START_TIMEOUT_S = 20.0
REPO = Path(__file__).resolve().parents[2]


def unavailable_reason() -> str | None:
    """Why a cluster in a box cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        return "needs OpenSSH's sshd and ssh-keygen"
    probe = f"crlprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns unavailable: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def keygen(path: Path) -> Path:
    """A new passphrase-less ed25519 key pair at ``path`` (+ ``.pub``)."""
    _keygen(path)
    return path


@dataclass
class Node:
    """One namespace with an sshd: a host of the cluster."""

    name: str
    netns: str
    address: str
    ifname: str
    sshd: subprocess.Popen[bytes] | None = None
    ssh_port: int = 22
    """The port corral reaches its sshd at (another for a host behind NAT)."""


@dataclass
class NetnsCluster:
    """The namespaces, their sshds, and the files a cluster.toml for them needs."""

    prefix: str
    root: Path
    ctl_netns: str
    client_key: Path
    known_hosts: Path
    nodes: list[Node] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def in_ctl(self, *argv: str) -> list[str]:
        """``argv`` run inside the controller's namespace."""
        return ["ip", "netns", "exec", self.ctl_netns, *argv]

    def write_cluster_toml(self, python: str | None, *, run: str, interface: str | None = None,
                           order: Sequence[str] | None = None,
                           host_lines: Mapping[str, str] | None = None,
                           master: str | None = None) -> Path:
        """A cluster.toml with every node as an SSH host; ``interface`` set on every host
        when given (default: none, so corral selects one). ``order``: the node names in the
        order listed (default n1, n2, ...); the master is then left to its default, the first
        host, unless ``master`` names it. ``python`` None leaves the key out; ``host_lines``
        adds TOML lines per node."""
        by_name = {node.name: node for node in self.nodes}
        hosts = []
        for name in order or by_name:
            node = by_name[name]
            hosts.append(
                f'[[hosts]]\nname = "{node.name}"\naddress = "{node.address}"\nuser = "root"\n'
                f'identity_file = "{self.client_key}"\n'
                + (f'python = "{python}"\n' if python is not None else "")
                + (f"port = {node.ssh_port}\n" if node.ssh_port != 22 else "")
                + f'workdir = "{self.root}/work-{node.name}"\ngpus = 0\nnproc = 1\nthreads = 1\n'
                + (f'interface = "{interface}"\n' if interface else "")
                + (host_lines or {}).get(node.name, ""))
        master = master or (None if order else self.nodes[0].name)
        master_line = f'master = "{master}"\n' if master else ""
        path = self.root / "cluster.toml"
        path.write_text(
            f'[cluster]\nname = "box"\n{master_line}'
            f'run_root = "{self.root}/runs"\n\n' + "\n".join(hosts)
            + f"\n[run]\n{run}\n\n[ssh]\nconnect_timeout = 10.0\n"
            f'known_hosts_file = "{self.known_hosts}"\n'
            f'config_file = "{self.root}/no-ssh-config"\n', encoding="utf-8")
        return path

    def processes_left(self) -> dict[str, list[int]]:
        """Pids still running in each node namespace, sshd itself excluded."""
        sshd_pids = {n.sshd.pid for n in self.nodes if n.sshd is not None}
        left: dict[str, list[int]] = {}
        for node in self.nodes:
            done = subprocess.run(["ip", "netns", "pids", node.netns], capture_output=True,
                                  text=True)
            pids = [int(p) for p in done.stdout.split() if int(p) not in sshd_pids]
            if pids:
                left[node.name] = pids
        return left

    def close(self) -> None:
        """Kill every process in the namespaces, delete them; safe to call twice."""
        for netns in self.namespaces:
            done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
            for pid in done.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for node in self.nodes:
            if node.sshd is not None:
                node.sshd.kill()
                node.sshd.wait()
                node.sshd = None
        for netns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        self.namespaces.clear()


def _sshd_config(root: Path, node: Node, host_key: Path, authorized: Path) -> Path:
    path = root / f"sshd-{node.name}.conf"
    path.write_text(
        f"ListenAddress {node.address}\nPort 22\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized}\nPidFile {root}/sshd-{node.name}.pid\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "MaxStartups 64\nMaxSessions 64\nLogLevel INFO\n"
        # No command corral sends sources the user's ~/.bashrc (as tests/remote/conftest.py's
        # daemons: a development machine's pyenv init there is ~100 processes a command).
        "SetEnv SHLVL=1\n", encoding="utf-8")
    return path


def _wait_listening(log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "Server listening" in text:
            return
        if "fatal" in text.lower():
            raise RuntimeError(f"sshd failed: {text[-500:]}")
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not start listening within {START_TIMEOUT_S} s: {log}")


def _start_sshd(box: NetnsCluster, node: Node) -> str:
    """Start ``node``'s sshd; its known_hosts line."""
    root = box.root
    host_key = keygen(root / f"host_key_{node.name}")
    log = root / f"sshd-{node.name}.log"
    config = _sshd_config(root, node, host_key, root / "authorized_keys")
    with open(log, "wb") as out:
        node.sshd = subprocess.Popen(
            ["ip", "netns", "exec", node.netns, SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    _wait_listening(log, time.monotonic() + START_TIMEOUT_S)
    where = node.address if node.ssh_port == 22 else f"[{node.address}]:{node.ssh_port}"
    return f"{where} {(root / f'{host_key.name}.pub').read_text().strip()}"


def add_natted_host(box: NetnsCluster, router: int, name: str = "n9") -> Node:
    """A host behind NAT: a namespace with the private address 10.88.0.2 whose only way out is
    node ``router`` (10.88.0.1 on a veth of its own), which masquerades its traffic and forwards
    port 2222 of its bridge address to the host's sshd. Corral then reaches the host at
    ``<router's address>:2222``, it reaches every host, and no host reaches it."""
    gateway = box.nodes[router]
    node = Node(name=name, netns=f"{box.prefix}-{name}", address=gateway.address,
                ifname=f"{box.prefix}-{name}", ssh_port=2222)
    _ip("netns", "add", node.netns)
    box.namespaces.append(node.netns)
    inside, outside = "10.88.0.2", "10.88.0.1"
    _ip("-n", gateway.netns, "link", "add", f"{node.ifname}r", "type", "veth", "peer", "name",
        node.ifname, "netns", node.netns)
    _ip("-n", gateway.netns, "addr", "add", f"{outside}/24", "dev", f"{node.ifname}r")
    _ip("-n", gateway.netns, "link", "set", f"{node.ifname}r", "up")
    _ip("-n", node.netns, "addr", "add", f"{inside}/24", "dev", node.ifname)
    _ip("-n", node.netns, "link", "set", node.ifname, "up")
    _ip("-n", node.netns, "link", "set", "lo", "up")
    _ip("-n", node.netns, "route", "add", "default", "via", outside)
    in_gateway = ["ip", "netns", "exec", gateway.netns]
    subprocess.run([*in_gateway, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
                   check=True)
    for rule in (["POSTROUTING", "-s", "10.88.0.0/24", "-o", gateway.ifname, "-j", "MASQUERADE"],
                 ["PREROUTING", "-d", gateway.address, "-p", "tcp", "--dport", "2222", "-j",
                  "DNAT", "--to-destination", f"{inside}:22"]):
        subprocess.run([*in_gateway, "iptables", "-t", "nat", "-A", *rule], check=True,
                       capture_output=True)
    private = Node(name=name, netns=node.netns, address=inside, ifname=node.ifname)
    line = _start_sshd(box, private)
    node.sshd = private.sshd
    key = line.split(" ", 1)[1]
    with box.known_hosts.open("a") as known:
        known.write(f"[{gateway.address}]:2222 {key}\n")
    box.nodes.append(node)
    return node


def build(root: Path, *, hosts: int = 3) -> NetnsCluster:
    """Namespaces, bridge, veths, addresses and one sshd per node; close() undoes it all."""
    prefix = f"crl{os.getpid() % 100000}"
    box = NetnsCluster(prefix=prefix, root=root, ctl_netns=f"{prefix}-ctl",
                       client_key=keygen(root / "client_key"), known_hosts=root / "known_hosts")
    try:
        _ip("netns", "add", box.ctl_netns)
        box.namespaces.append(box.ctl_netns)
        bridge = f"{prefix}br"
        _ip("-n", box.ctl_netns, "link", "set", "lo", "up")
        _ip("-n", box.ctl_netns, "link", "add", bridge, "type", "bridge")
        _ip("-n", box.ctl_netns, "addr", "add", f"{CTL_ADDRESS}/24", "dev", bridge)
        _ip("-n", box.ctl_netns, "link", "set", bridge, "up")
        authorized = root / "authorized_keys"
        authorized.write_text((root / "client_key.pub").read_text())
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        known = []
        for i in range(1, hosts + 1):
            node = Node(name=f"n{i}", netns=f"{prefix}-n{i}", address=f"{SUBNET}.{i}",
                        ifname=f"{prefix}-{i}")
            _ip("netns", "add", node.netns)
            box.namespaces.append(node.netns)
            # Both ends are created inside namespaces: the root namespace never sees them.
            _ip("-n", box.ctl_netns, "link", "add", f"{node.ifname}b", "type", "veth",
                "peer", "name", node.ifname, "netns", node.netns)
            _ip("-n", box.ctl_netns, "link", "set", f"{node.ifname}b", "master", bridge)
            _ip("-n", box.ctl_netns, "link", "set", f"{node.ifname}b", "up")
            _ip("-n", node.netns, "addr", "add", f"{node.address}/24", "dev", node.ifname)
            _ip("-n", node.netns, "link", "set", node.ifname, "up")
            _ip("-n", node.netns, "link", "set", "lo", "up")
            known.append(_start_sshd(box, node))
            box.nodes.append(node)
        box.known_hosts.write_text("\n".join(known) + "\n")
    except BaseException:
        box.close()
        raise
    return box


def check_rows(stdout: str) -> list[list[str]]:
    """``corral check``'s table as rows of cells, a cell's wrapped lines joined by spaces."""
    rows: list[list[str]] = []
    for line in stdout.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells[0] or cells[1] or not rows:
            rows.append(cells)
        else:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=False)]
    return rows


def mesh_text(stdout: str) -> str:
    """Every ``mesh`` row of ``corral check``'s table, one line each."""
    return "\n".join(" | ".join(row) for row in check_rows(stdout) if row[1] == "mesh")


def corral_command(box: NetnsCluster, *args: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of ``corral -c <box>/cluster.toml ARGS`` run from the
    controller's namespace (``ip netns exec`` execs: the process is corral's own)."""
    argv = box.in_ctl(sys.executable, "-m", "console", "-c", str(box.root / "cluster.toml"),
                      *args)
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "HOME": str(box.root), "COLUMNS": "200",
           "PYTHONPATH": str(REPO)}
    return argv, env


def corral(box: NetnsCluster, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``corral -c <box>/cluster.toml ARGS`` run from the controller's namespace."""
    argv, env = corral_command(box, *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=env)


def corral_process(box: NetnsCluster, *args: str) -> subprocess.Popen[str]:
    """``corral ARGS`` started from the controller's namespace, its output (stdout and stderr
    together) read line by line as it comes."""
    argv, env = corral_command(box, *args)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, env=env)
