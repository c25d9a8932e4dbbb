"""The launch plan: what every host of a run will do, decided once for the whole cluster.

From cluster.toml and the facts the pre-flight check found on each host (``LaunchFacts``: GPU
counts, network interfaces, a free rendezvous port, CPU facts), this module decides per host:
how many ranks it starts and which global ranks they are, the device they train on and which
GPUs they may see, and, for the cluster as a whole, the one process-group backend every rank is
given explicitly.
``corral run`` launches exactly this plan; ``corral run --dry-run`` (and the console's plan
screen) shows it without starting anything.

Ranks are numbered in cluster.toml's host order (the first host's ranks first), whatever order
torch's rendezvous gives the nodes (the master's is node 0): each host's ranks learn their
first global rank from ``CORRAL_RANK_BASE`` (``trainer.launch_contract``), so a setting given in
host order (``[run] split``) reaches the ranks of the host it names, and rank 0, which writes
the checkpoints, runs on the first host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig, HostSection
from remote.hosts.cpu_placement import HostCpuFacts, HostCpuPlan, host_plans
from remote.hosts.ssh import resolve_endpoint
from trainer.balance.links import PairLink, host_links
from trainer.settings.run_settings import Precision, device_precision

HostDevice = Literal["cpu", "cuda"]


def master_address(config: ClusterConfig) -> str:
    """The master's address as the workers reach it."""
    if config.cluster.master_addr:
        return config.cluster.master_addr
    master = config.master_host
    if master.is_local:
        return "127.0.0.1"
    return resolve_endpoint(master, config.ssh)[0]


def node_address(config: ClusterConfig, host: HostSection, master_addr: str) -> str | None:
    """The address the other hosts reach ``host`` at (torchrun's ``--local-addr``)."""
    if host.name == config.cluster.master:
        return master_addr
    if host.is_local:
        return "127.0.0.1" if config.master_host.is_local else None
    return resolve_endpoint(host, config.ssh)[0]


@dataclass(frozen=True, kw_only=True)
class LaunchFacts:
    """What a launch needs to know about the hosts, asked once, by the pre-flight check
    (``remote.checks.preflight.check_and_plan``)."""

    gpus: Mapping[str, int | None]
    """GPUs found per host (None: not asked or not known)."""
    interfaces: Mapping[str, str | None]
    """The interface the other hosts reach each host through (None: not known)."""
    port: int | None
    """A rendezvous port free on the master (None: not known)."""
    membership_port: int | None = None
    """A second port free on the master for live joins and leaves (``remote.checks.
    membership_port``; None: not a ``task`` run, or not known)."""
    cpu: Mapping[str, HostCpuFacts] = field(default_factory=dict)
    """Each host's boot id, usable cores and allocator libraries (absent: not known)."""
    bf16: Mapping[str, tuple[bool, ...]] = field(default_factory=dict)
    """Per host, whether each GPU (in index order) computes in bf16 (absent: not known)."""
    links: tuple[PairLink, ...] = ()
    """Each direction between two hosts as the full-mesh check found and measured it."""
    code_present: Mapping[str, bool | None] = field(default_factory=dict)
    """Per host, whether the code tree asked about is there already (None: not asked)."""
    leftovers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Per host with leftover processes, the run ids they belong to (``leftovers`` item)."""
    torch: Mapping[str, str | None] = field(default_factory=dict)
    """Per host, its torch release without the build tag (None: torch did not answer)."""
    addresses: Mapping[str, str | None] = field(default_factory=dict)
    """Per host, the address its ranks use as its probe found it (None: not found)."""


def nproc_for(host: HostSection, gpus: int | None) -> int:
    """Ranks to start on the host: ``nproc``, else its GPU count (``gpus``), else 1."""
    if host.nproc is not None:
        return host.nproc
    if isinstance(host.gpus, int):
        return max(host.gpus, 1)
    return max(gpus or 0, 1)


def interface_for(host: HostSection, found: str | None) -> str | None:
    """GLOO/NCCL_SOCKET_IFNAME for the host: its own setting, else the one found."""
    return host.interface or found



class PlanError(CorralError):
    """The hosts' facts contradict cluster.toml (e.g. nccl asked for with a CPU-only host)."""

    title = "cannot plan the launch"


@dataclass(frozen=True, kw_only=True)
class HostPlan:
    """What one host runs."""

    host: HostSection
    node_rank: int
    """The host's position in cluster.toml (torchrun's ``--node-rank``)."""
    first_rank: int
    """The global rank of the host's first rank (ranks are numbered in host order)."""
    nproc: int
    """Ranks started on the host."""
    device: HostDevice
    """``cuda`` when the host trains on GPUs, else ``cpu``."""
    gpus: int
    """GPUs the host's ranks use (0 on the CPU)."""
    visible_devices: str | None
    """``CUDA_VISIBLE_DEVICES`` for the host's ranks: ``""`` hides every GPU (``gpus = 0``),
    ``"0,1"`` pins the first two (``gpus = 2``); None leaves it as it is (``gpus = "auto"``,
    or the host's ``env`` sets it)."""
    interface: str | None
    """``GLOO_SOCKET_IFNAME``/``NCCL_SOCKET_IFNAME`` (None: Gloo/NCCL choose)."""
    local_addr: str | None
    """torchrun's ``--local-addr``: the address the other hosts reach this one at."""
    cpu: HostCpuPlan | None = None
    """The host's allocator environment and core flags (``remote.hosts.cpu_placement``)."""
    link_mbit: float | None = None
    """The host's link in Mbit/s as the full-mesh check measured it (None: not measured)."""
    precision: str = "auto"
    """What ``[run] precision`` means on this host (``precision_for``); ``auto`` or ``tf32``
    when its GPUs' compute capability is not known (each rank then decides for its device)."""

    @property
    def ranks(self) -> range:
        """The host's global ranks."""
        return range(self.first_rank, self.first_rank + self.nproc)


@dataclass(frozen=True, kw_only=True)
class ClusterPlan:
    """Every host's plan and what they share."""

    backend: str
    """The process-group backend every rank is given (never ``auto``)."""
    hosts: tuple[HostPlan, ...]
    """In cluster.toml's order."""

    @property
    def world_size(self) -> int:
        """Ranks over all hosts."""
        return sum(h.nproc for h in self.hosts)

    def shares(self, split: tuple[int, ...] | None, name: str) -> tuple[int, ...] | None:
        """Host ``name``'s part of a split given in host order (None: no split given)."""
        place = next(h for h in self.hosts if h.host.name == name)
        if split is None or len(split) != self.world_size:
            return None
        return split[place.first_rank:place.first_rank + place.nproc]


def devices_for(host: HostSection, found: int | None) -> tuple[HostDevice, int, str | None]:
    """The device, GPU count and ``CUDA_VISIBLE_DEVICES`` of a host's ranks.

    ``found``: the GPUs the check saw there (None: unknown, taken as none). A host uses exactly
    the GPUs cluster.toml gives it: ``gpus = 0`` trains on the CPU even on a GPU box (every GPU
    hidden), ``gpus = N`` pins the first N, ``"auto"`` uses what was found.
    """
    user_pinned = "CUDA_VISIBLE_DEVICES" in host.env
    if host.gpus == "auto":
        count = found or 0
        return ("cuda" if count else "cpu"), count, None
    if host.gpus == 0:
        return "cpu", 0, None if user_pinned else ""
    pinned = None if user_pinned else ",".join(str(i) for i in range(host.gpus))
    return "cuda", host.gpus, pinned


def precision_for(requested: Precision, device: HostDevice, gpus: int,
                  ampere: tuple[bool, ...] | None) -> str:
    """``[run] precision`` on a host (``run_settings.device_precision``): ``auto`` is fp32 on
    the CPU and, on GPUs, bf16 when every GPU its ranks use has compute capability 8.0+, else
    fp16 (with a loss scaler); ``tf32`` stays on such GPUs and is fp32 elsewhere; both are left
    to each rank when the GPUs are not known (``gpus`` counts from GPU 0, as ``devices_for``
    pins them). Any other value is itself."""
    if requested not in ("auto", "tf32"):
        return requested
    if device == "cpu":
        return device_precision(requested, "cpu", False)
    used = ampere[:gpus] if ampere else ()
    if not used or len(used) < gpus:
        return requested
    return device_precision(requested, "cuda", all(used))


def cluster_backend(requested: str, hosts: tuple[HostPlan, ...]) -> str:
    """``auto``: nccl when every host trains on GPUs, else gloo. An explicit nccl with a
    CPU host cannot form a process group: that is an error naming the host."""
    cpu_hosts = [h.host.name for h in hosts if h.device == "cpu"]
    if requested == "nccl" and cpu_hosts:
        raise PlanError(f'[run] backend = "nccl" needs a GPU for every rank, but '
                        f"{', '.join(cpu_hosts)} train on the CPU (no GPU found or gpus = 0); "
                        'use backend = "auto" or "gloo"')
    if requested != "auto":
        return requested
    return "gloo" if cpu_hosts else "nccl"


def plan_cluster(config: ClusterConfig, facts: LaunchFacts, master_addr: str) -> ClusterPlan:
    """The plan for ``config`` given what was found on each host (GPU counts, interfaces,
    CPU facts)."""
    nprocs = {h.name: nproc_for(h, facts.gpus.get(h.name)) for h in config.hosts}
    devices = {h.name: devices_for(h, facts.gpus.get(h.name)) for h in config.hosts}
    cpu = host_plans(config, facts.cpu, nprocs, {n: d[1] for n, d in devices.items()})
    links = host_links(facts.links)  # bytes/s
    places: list[HostPlan] = []
    first_rank = 0
    for node_rank, host in enumerate(config.hosts):
        device, used, visible = devices[host.name]
        places.append(HostPlan(
            host=host, node_rank=node_rank, first_rank=first_rank, nproc=nprocs[host.name],
            device=device, gpus=used, visible_devices=visible,
            precision=precision_for(config.run.precision, device, used,
                                    facts.bf16.get(host.name)),
            interface=interface_for(host, facts.interfaces.get(host.name)),
            local_addr=node_address(config, host, master_addr), cpu=cpu.get(host.name),
            link_mbit=links[host.name] * 8 / 1e6 if host.name in links else None))
        first_rank += nprocs[host.name]
    hosts = tuple(places)
    return ClusterPlan(backend=cluster_backend(config.run.backend, hosts), hosts=hosts)
