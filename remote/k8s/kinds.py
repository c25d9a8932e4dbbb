"""Hosts as Kubernetes sees them: each host's launch plan, the host kinds, the format.

A host kind is what one pod template can hold: the same device type, GPU count and rank count
(and the same node selector and image, which say where its pods run and what they run). The
formats hold kinds differently: a PyTorchJob has a Master (one pod: rank 0's host) and one
Worker template, with one ``nprocPerNode`` for the job; a JobSet one replicated job per kind;
a TrainJob one node group. Anything that a format cannot hold is one line naming the key and
the fix (``ExportError``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from profiles.user_errors import UsageError
from remote.checks.plan import ClusterPlan, HostPlan, LaunchFacts, plan_cluster
from remote.config.cluster import ClusterConfig, HostSection
from remote.config.errors import host_where, quote
from remote.config.k8s_rules import k8s_name_problem
from remote.k8s.formats import K8S_FORMATS, K8sFormat

POD_PYTHON = "python"
"""The interpreter on the image's PATH that runs torchrun and the trainer."""
POD_HOME = "/corral"
"""``HOME`` of every pod: code, the claim's run directories and data sit below it."""
RESERVED_ENV_PREFIX = "PET_"
"""Variables the controllers set for torchrun; a host's ``env`` must not set them."""
PLACEHOLDER_MASTER = "corral-master"
"""The master address in the plan; the pod's start script puts the controller's in its place."""


class ExportError(UsageError):
    """cluster.toml asks for something the chosen Kubernetes format cannot express."""

    title = "cannot export to Kubernetes"


@dataclass(frozen=True, kw_only=True)
class HostKind:
    """Hosts one pod template runs: a PyTorchJob replica type, a JobSet replicated job."""

    name: str
    """Its first host's name (a JobSet's replicated job is called so)."""
    image: str
    node_selector: dict[str, str]
    places: tuple[HostPlan, ...]
    """In cluster.toml's order."""

    @property
    def gpus(self) -> int:
        """GPUs each pod requests."""
        return self.places[0].gpus

    @property
    def nproc(self) -> int:
        """Ranks per pod."""
        return self.places[0].nproc


def pod_config(config: ClusterConfig) -> ClusterConfig:
    """``config`` as the pods run it: every host is its pod (no SSH), with the image's python,
    ``HOME`` as workdir, run directories on the claim, the first host as master, and the pod's
    own network (a host's ``interface`` names one of the SSH machine's)."""
    hosts = tuple(replace(h, address="local", user=None, port=None, identity_file=None,
                          python=POD_PYTHON, workdir="~", interface=None)
                  for h in config.hosts)
    cluster = replace(config.cluster, master=hosts[0].name, master_addr=None,
                      run_root="~/runs")
    return replace(config, cluster=cluster, hosts=hosts)


def pod_plan(config: ClusterConfig) -> ClusterPlan:
    """The launch plan of the pods (``config`` from ``pod_config``): ranks, device and GPUs
    from cluster.toml alone; no host is asked, so a GPU count must be a number."""
    for index, host in enumerate(config.hosts):
        _check_host(index, host)
    facts = LaunchFacts(gpus={}, interfaces={}, port=None)
    plan = plan_cluster(config, facts, PLACEHOLDER_MASTER)
    places = tuple(replace(p, local_addr=None, cpu=None) for p in plan.hosts)
    return replace(plan, hosts=places)


def _check_host(index: int, host: HostSection) -> None:
    if host.gpus == "auto":
        raise ExportError(f'{host_where(index, host.name, "gpus")}: "auto" cannot become a '
                          "pod's GPU request; set gpus = N (0 for a CPU pod)")
    reserved = sorted(k for k in host.env if k.startswith(RESERVED_ENV_PREFIX))
    if reserved:
        raise ExportError(f"{host_where(index, host.name, 'env.' + reserved[0])}: PET_* "
                          "variables are set by the Kubernetes controller for torchrun; "
                          "remove it")
    if host.env:  # never dropped silently, never written into a manifest in plain text
        names = ", ".join(sorted(host.env))
        raise ExportError(f"{host_where(index, host.name, 'env')}: export k8s does not carry a "
                          f"host's env ({names}) into the manifests, where values would be "
                          "plain text; leave env out for the export and give the pods these "
                          "variables from a Kubernetes Secret (docs/kubernetes.md)")


def host_kinds(config: ClusterConfig, plan: ClusterPlan) -> tuple[HostKind, ...]:
    """The kinds of ``plan``'s hosts, in order of their first host."""
    groups: dict[tuple[object, ...], list[HostPlan]] = {}
    images: dict[str, str] = {}
    for index, place in enumerate(plan.hosts):
        box = place.host.container
        image = place.host.image or (box and box.image) or config.kubernetes.image
        if not image:
            where = host_where(index, place.host.name)
            raise ExportError(f"[kubernetes] image: not set, and {where} sets none either; "
                              'set [kubernetes] image = "REGISTRY/IMAGE:TAG" (Python with '
                              "torch: examples/k8s/Dockerfile)")
        images[place.host.name] = image
        key = (place.device, place.gpus, place.nproc, image,
               tuple(sorted(place.host.node_selector.items())))
        groups.setdefault(key, []).append(place)
    return tuple(HostKind(name=members[0].host.name, image=images[members[0].host.name],
                          node_selector=dict(members[0].host.node_selector),
                          places=tuple(members)) for members in groups.values())


def pytorchjob_problem(kinds: tuple[HostKind, ...], plan: ClusterPlan) -> str | None:
    """Why a PyTorchJob cannot hold these hosts (Master: the first host; Worker: one kind for
    every other host, one rank count for all), or None."""
    first, rest = plan.hosts[0], plan.hosts[1:]
    kind_of = {p.host.name: k.name for k in kinds for p in k.places}
    odd = next((p for p in rest if kind_of[p.host.name] != kind_of[rest[0].host.name]), None)
    if odd is not None:
        return (f"{host_where(odd.node_rank, odd.host.name)}: a PyTorchJob's Worker pods are "
                f"one kind, but {quote(odd.host.name)} and {quote(rest[0].host.name)} differ "
                "(device, gpus, nproc, node_selector or image); use --format jobset")
    odd_nproc = next((p for p in rest if p.nproc != first.nproc), None)
    if odd_nproc is not None:
        return (f"{host_where(odd_nproc.node_rank, odd_nproc.host.name, 'nproc')}: "
                f"{odd_nproc.nproc} ranks, but a PyTorchJob has one nprocPerNode and "
                f"{quote(first.host.name)} runs {first.nproc}; give the hosts the same nproc "
                "or use --format jobset")
    return None


def choose_format(requested: str | None, kinds: tuple[HostKind, ...],
                  plan: ClusterPlan) -> K8sFormat:
    """``requested`` when it can hold the hosts (else ``ExportError``); without one a
    PyTorchJob when it can, else a JobSet."""
    if requested is None:
        return "pytorchjob" if pytorchjob_problem(kinds, plan) is None else "jobset"
    if requested == "pytorchjob":
        problem = pytorchjob_problem(kinds, plan)
        if problem:
            raise ExportError(problem)
    if requested == "trainjob" and len(kinds) > 1:
        second = kinds[1].places[0]
        raise ExportError(f"{host_where(second.node_rank, second.host.name)}: a TrainJob has "
                          f"one node group, but the hosts are {len(kinds)} kinds (device, "
                          "gpus, nproc, node_selector, image); use --format jobset")
    if requested not in K8S_FORMATS:
        raise ExportError(f"--format {requested}: use one of {', '.join(K8S_FORMATS)}")
    return requested  # type: ignore[return-value]


def job_name(config: ClusterConfig) -> str:
    """``[kubernetes] job_name``, else ``[cluster] name`` when it is a Kubernetes name."""
    if config.kubernetes.job_name:
        return config.kubernetes.job_name
    problem = k8s_name_problem(config.cluster.name, label=True)
    if problem:
        raise ExportError(f"[cluster] name: {problem}; or set [kubernetes] job_name")
    return config.cluster.name


def check_group_names(job: str, kinds: tuple[HostKind, ...]) -> None:
    """A JobSet's replicated jobs are named after their kind's first host: that name must be
    a Kubernetes name, short enough for the pods' hostnames (``<job>-<group>-<i>-0``)."""
    for kind in kinds:
        first = kind.places[0]
        where = host_where(first.node_rank, kind.name, "name")
        problem = k8s_name_problem(kind.name, label=True)
        if problem:
            raise ExportError(f"{where}: {problem} (it names the host's JobSet group)")
        hostname = f"{job}-{kind.name}-{len(kind.places) - 1}-0"
        if len(hostname) > 63:
            raise ExportError(f"{where}: the pods' hostname {hostname} is over 63 characters; "
                              "shorten the host's name or [kubernetes] job_name")
