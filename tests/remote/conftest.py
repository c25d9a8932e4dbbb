"""Real OpenSSH sshd daemons on loopback ports: several daemons are several hosts.

``sshd_cluster(n)`` starts ``n`` sshd processes (``/usr/sbin/sshd -D -e``) with generated host
keys, a generated client key in ``authorized_keys`` and a known_hosts file that trusts them, and
returns what a test needs to write a cluster for them. Nothing depends on ``$HOME``: the client
key, known_hosts and ssh config paths are passed through the cluster config, and a command over
them as root does not source root's ``~/.bashrc`` (``SetEnv SHLVL=1`` for root alone). The daemons
are killed when the test ends. Tests using it skip when sshd or ssh-keygen is missing.

``worker_account(kind)`` makes a Unix account as users have them (a bash whose ``~/.bashrc``
prints a notice, fish, zsh, dash, tcsh as the login shell) that the same daemons let in with the
same client key: ``cluster.host(name, user=account, ...)``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection, SshSection

if TYPE_CHECKING:
    from netns import NetnsCluster

SSHD = "/usr/sbin/sshd"
START_DEADLINE_S = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, stdout=subprocess.DEVNULL)


def fingerprint(pub: Path) -> str:
    """The SHA256 fingerprint ssh-keygen prints for a public key file."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
                         check=True, capture_output=True, text=True).stdout
    return out.split()[1]


def _wait_for_banner(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"sshd on port {port} exited: {err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd on port {port} did not answer within {START_DEADLINE_S} s")
        time.sleep(0.05)  # polling the port with a deadline; the condition is the banner


@dataclass
class SshdHost:
    """One running sshd."""

    name: str
    port: int
    host_key_pub: Path
    proc: subprocess.Popen[bytes]

    @property
    def fingerprint(self) -> str:
        """SHA256 fingerprint of the daemon's host key."""
        return fingerprint(self.host_key_pub)


@dataclass
class SshdCluster:
    """Daemons plus the client side files that reach them."""

    root: Path
    client_key: Path
    known_hosts: Path
    ssh_config: Path
    hosts: list[SshdHost] = field(default_factory=list)

    def host(self, name: str, **overrides: object) -> HostSection:
        """A ``[[hosts]]`` entry for daemon ``name`` (this interpreter, tmp workdir)."""
        daemon = next(h for h in self.hosts if h.name == name)
        values: dict[str, object] = dict(
            name=name, address="127.0.0.1", port=daemon.port, user="root",
            identity_file=str(self.client_key), python=sys.executable,
            workdir=str(self.root / "work" / name), gpus=0, nproc=1, threads=1,
        )
        values.update(overrides)
        return HostSection(**values)  # type: ignore[arg-type]

    def admit(self, account: str) -> None:
        """Let ``account`` (a ``worker_account``) in with this cluster's client key."""
        ssh_dir = Path(os.path.expanduser(f"~{account}")) / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        keys.write_text((self.root / "client_key.pub").read_text())
        for path in (ssh_dir, keys):
            shutil.chown(path, account, account)

    def ssh_section(self, **overrides: object) -> SshSection:
        """``[ssh]`` pointing at this cluster's known_hosts and ssh config."""
        values: dict[str, object] = dict(
            connect_timeout=5.0, keepalive=5.0, known_hosts_file=str(self.known_hosts),
            config_file=str(self.ssh_config),
        )
        values.update(overrides)
        return SshSection(**values)  # type: ignore[arg-type]

    def config(self, *, hosts: list[HostSection] | None = None, run: RunSection | None = None,
               ssh: SshSection | None = None, name: str = "t") -> ClusterConfig:
        """A cluster of every daemon (or ``hosts``), the first being the master."""
        chosen = hosts or [self.host(h.name) for h in self.hosts]
        return ClusterConfig(
            path=self.root / "cluster.toml",
            cluster=ClusterSection(name=name, master=chosen[0].name,
                                   run_root=str(self.root / "runs")),
            hosts=tuple(chosen), run=run or RunSection(), ssh=ssh or self.ssh_section(),
        )


def _sshd_config(root: Path, port: int, host_key: Path, authorized: Path) -> Path:
    path = root / f"sshd_config.{port}"
    path.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        # The second file: a ``worker_account``'s own (sshd reads it as that user).
        f"PidFile {root / f'sshd.{port}.pid'}",
        f"AuthorizedKeysFile {authorized} .ssh/authorized_keys",
        "PermitRootLogin yes", "StrictModes no", "UsePAM no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "LogLevel ERROR",
        "MaxStartups 100", "MaxSessions 100", "ClientAliveInterval 0",
        # bash sources ~/.bashrc for a command sshd runs only as a top-level shell (its level,
        # SHLVL + 1, below 2): at 1 it does not, so for root, the account of most tests, a
        # development machine's bashrc (pyenv's init there: ~100 processes, ~0.14 CPU-s a
        # command) is no test's cost. Every other account (``worker_account``) gets its login
        # shell as sshd gives it, start-up files and all: those tests are where corral meets
        # them (tests/remote/scenarios/test_accounts_sshd.py).
        "Match User root", "    SetEnv SHLVL=1", "",
    ]))
    return path


@pytest.fixture
def sshd_cluster(tmp_path: Path) -> Iterator[Callable[..., SshdCluster]]:
    """Factory: ``sshd_cluster(n, trusted=True)`` starts ``n`` daemons named h0, h1, ..."""
    with sshd_factory(tmp_path) as start:
        yield start


@contextlib.contextmanager
def sshd_factory(tmp_path: Path) -> Iterator[Callable[..., SshdCluster]]:
    """``sshd_cluster``'s factory for a fixture of any scope (a module's table of runs):
    the daemons it started are stopped on exit."""
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH sshd is not installed (apt-get install openssh-server)")
    started: list[subprocess.Popen[bytes]] = []

    def start(n: int, *, trusted: bool = True,
              prefix: Callable[[int], list[str]] | None = None) -> SshdCluster:
        """``prefix(i)``: words put before daemon ``i``'s command line (e.g. ``unshare -m``
        and a mount, to give that host its own view of a path)."""
        root = tmp_path / "ssh"
        root.mkdir(exist_ok=True)
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        client_key = root / "client_key"
        if not client_key.exists():
            _keygen(client_key)
        authorized = root / "authorized_keys"
        authorized.write_text((root / "client_key.pub").read_text())
        known = root / "known_hosts"
        ssh_config = root / "ssh_config"
        ssh_config.write_text("# empty: the cluster config says everything\n")
        cluster = SshdCluster(root=root, client_key=client_key, known_hosts=known,
                              ssh_config=ssh_config)
        lines: list[str] = []
        for i in range(n):
            port = free_port()
            host_key = root / f"host_key.{port}"
            _keygen(host_key)
            config = _sshd_config(root, port, host_key, authorized)
            words = [*(prefix(i) if prefix else []), SSHD, "-D", "-e", "-f", str(config)]
            proc = subprocess.Popen(words,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            started.append(proc)
            _wait_for_banner(port, proc, time.monotonic() + START_DEADLINE_S)
            pub = Path(f"{host_key}.pub")
            key_type, key_data = pub.read_text().split()[:2]
            lines.append(f"[127.0.0.1]:{port} {key_type} {key_data}\n")
            cluster.hosts.append(SshdHost(name=f"h{i}", port=port, host_key_pub=pub, proc=proc))
        known.write_text("".join(lines) if trusted else "")
        return cluster

    try:
        yield start
    finally:
        _stop_daemons(started)


def _stop_daemons(started: list[subprocess.Popen[bytes]]) -> None:
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


BANNER_BASHRC = (
    "# A login notice, as cluster admins put it before the interactive-only guard.\n"
    'echo "Welcome to node-7 (GPU cluster) -- jobs over 24h are killed"\n'
    'printf "\\033[33mquota: 81%% used\\033[0m\\n"\n'
    "# An xterm title, no newline after it (corral's frame follows on the same line).\n"
    "printf '\\033]0;%s\\007' \"$HOSTNAME\"\n")
"""What the ``banner`` account's ``~/.bashrc`` starts with (shared/field/hosts/banner.bashrc,
after a title that leaves no newline before corral's frame)."""
ACCOUNT_SHELLS = {"banner": "bash", "fish": "fish", "zsh": "zsh", "dash": "dash",
                  "tcsh": "tcsh"}
"""Each kind of ``worker_account`` and its login shell."""


@pytest.fixture(scope="session")
def worker_account() -> Iterator[Callable[[str], str]]:
    """Factory: ``worker_account(kind)`` → the name of a Unix account whose login shell is
    ``ACCOUNT_SHELLS[kind]`` (``banner``: bash, its ``~/.bashrc`` printing a notice first),
    made for the session and removed after it. Skips unless root with ``useradd`` and that
    shell."""
    made: list[str] = []

    def make(kind: str) -> str:
        shell = shutil.which(ACCOUNT_SHELLS[kind])
        if os.geteuid() != 0 or shutil.which("useradd") is None or shell is None:
            pytest.skip(f"a {kind} account needs root, useradd and {ACCOUNT_SHELLS[kind]} "
                        "(scripts/system_packages.sh installs it)")
        # One account per pytest-xdist worker: a worker's teardown never removes another's.
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        name = f"corral-{kind}" + (f"-{worker}" if worker else "")
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            # "*": no password, yet not locked ("!"): sshd without PAM refuses a locked one.
            subprocess.run(["useradd", "-m", "-p", "*", "-s", shell, name], check=True)
            made.append(name)
        home = Path(os.path.expanduser(f"~{name}"))
        if kind == "banner":
            skel = Path("/etc/skel/.bashrc")
            stock = skel.read_text() if skel.is_file() else ""
            (home / ".bashrc").write_text(BANNER_BASHRC + stock)
        return name

    yield make
    for name in made:
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsCluster]:
    """A cluster in a box (netns.py) for one test module; skips where it cannot be built."""
    try:
        import netns
    except ImportError:  # collected as a package module
        from tests.remote import netns  # type: ignore[no-redef]
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(f"cluster in a box {reason}")
    cluster = netns.build(tmp_path_factory.mktemp("box"))
    try:
        yield cluster
    finally:
        cluster.close()
