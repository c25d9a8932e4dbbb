"""cluster.toml: the one file a user writes. Parsed once into frozen dataclasses.

CONTRACT (shared by remote, console and their tests): the dataclass and field names below.
Parsing and strict validation (``load_cluster``) live in this module too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class ClusterSection:
    """``[cluster]``: the cluster as a whole."""

    name: str
    """Shown in the console header and used in run ids."""
    master: str
    """Name of the ``[[hosts]]`` entry that hosts the rendezvous (node rank 0)."""
    rendezvous_port: int | Literal["auto"] = "auto"
    """TCP port for torch's c10d rendezvous on the master; ``"auto"`` picks a free one."""
    master_addr: str | None = None
    """Address the workers use to reach the master; default: the master's HostName after
    ssh_config resolution (``127.0.0.1`` for a ``local`` master)."""
    run_root: str = "~/.corral/runs"
    """Directory on every host (and locally) under which each run gets ``<run_root>/<run_id>``."""


@dataclass(frozen=True, kw_only=True)
class HostSection:
    """One ``[[hosts]]`` entry: a machine (or, with ``address = "local"``, this machine)."""

    name: str
    """Unique name used in the console, logs and ``[cluster] master``."""
    address: str
    """An ssh_config alias, hostname or IP, or ``"local"`` for this machine without SSH."""
    user: str | None = None
    """SSH user; default from ssh_config, else the local user."""
    port: int | None = None
    """SSH port; default from ssh_config, else 22."""
    identity_file: str | None = None
    """Private key file; default from ssh_config and the ssh agent."""
    python: str = "python3"
    """Python interpreter on the host (with torch installed)."""
    workdir: str = "~/.corral"
    """Where pushed code lives on the host (``<workdir>/code/<hash>``)."""
    gpus: int | Literal["auto"] = "auto"
    """How many GPUs to use; ``"auto"`` uses every GPU torch sees there."""
    nproc: int | None = None
    """Ranks on this host; default: the GPU count, or 1 on a CPU-only host."""
    threads: int | None = None
    """CPU threads per rank (the trainer's ``--threads``); default: torch's default."""
    slowdown: float = 1.0
    """Emulate a device this many times slower (for demos and tests); 1.0 = real speed."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the launcher and ranks on this host."""
    interface: str | None = None
    """Network interface for Gloo/NCCL (``GLOO_SOCKET_IFNAME``); default: detected."""

    @property
    def is_local(self) -> bool:
        """True for ``address = "local"`` (run here without SSH)."""
        return self.address == "local"


@dataclass(frozen=True, kw_only=True)
class RunSection:
    """``[run]``: the trainer's settings (each maps to a ``python -m trainer`` flag)."""

    model: str = "simple_cnn"
    dataset: str = "synthetic_image"
    data_dir: str | None = None
    samples: int = 4096
    """Size of the synthetic dataset."""
    global_batch: int = 64
    split: tuple[int, ...] | None = None
    """Initial per-rank shares (sum = global_batch); default equal."""
    policy: Literal["static", "proportional", "dynamic"] = "dynamic"
    rebalance_every: int = 10
    steps: int | None = None
    epochs: int | None = None
    lr: float = 0.05
    optimizer: Literal["sgd", "adamw"] = "sgd"
    seed: int = 0
    checkpoint_every: int = 50
    backend: Literal["auto", "gloo", "nccl"] = "auto"


@dataclass(frozen=True, kw_only=True)
class SshSection:
    """``[ssh]``: how corral connects."""

    connect_timeout: float = 10.0
    """Seconds before an unreachable host is reported as such."""
    keepalive: float = 15.0
    """Seconds between keepalives on each connection (0 disables)."""
    known_hosts: Literal["strict", "insecure"] = "strict"
    """``strict`` verifies host keys against ~/.ssh/known_hosts (and ``corral trust``);
    ``insecure`` skips verification and prints a warning."""
    max_parallel_connects: int = 8
    """Connects in flight at once (sshd's MaxStartups drops bursts)."""


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """A whole cluster.toml."""

    path: Path
    """The file it was read from (named in every error)."""
    cluster: ClusterSection
    hosts: tuple[HostSection, ...]
    run: RunSection = field(default_factory=RunSection)
    ssh: SshSection = field(default_factory=SshSection)

    @property
    def master_host(self) -> HostSection:
        """The ``[[hosts]]`` entry named by ``[cluster] master``."""
        return next(h for h in self.hosts if h.name == self.cluster.master)
