"""What the pre-flight probes found on one reachable host (``HostFacts``): filled by the
judges of ``preflight.py`` and ``torch_versions.py``, read by the launch plan and the push."""

from __future__ import annotations

from dataclasses import dataclass, field

from remote.checks.estimate_facts import EstimateProbe
from remote.checks.memory_facts import MemoryProbe
from remote.events import CheckItem, CheckTiming
from remote.hosts import cpu_placement


@dataclass(kw_only=True)
class HostFacts:
    """What the probes found on one reachable host."""

    items: list[CheckItem] = field(default_factory=list)
    timings: list[CheckTiming] = field(default_factory=list)
    """How long its probe took (the master's wait) and its torch probe (on the host)."""
    torch: str | None = None
    """torch's version without the local build tag, when torch imports."""
    python_ok: bool = False
    executable: str | None = None
    """The interpreter the probe ran (its ``sys.executable``), when it said."""
    gpus: int | None = None
    """GPUs torch can use (0 on a host without GPU devices), when torch imports."""
    gpu_names: list[str] = field(default_factory=list)
    bf16: list[bool] = field(default_factory=list)  # per GPU: compute capability 8.0+
    interface: str | None = None
    """The interface the other hosts reach this one through, when it could be told."""
    address: str | None = None
    """The address this host's ranks advertise (the full-mesh check's target), when told."""
    connect: str | None = None
    """The output of this worker's side of the rendezvous-port test, when it ran."""
    code_present: bool | None = None
    """Whether the code tree asked about is on the host (None: not asked)."""
    leftover_runs: tuple[str, ...] = ()
    """The run ids whose processes the leftovers probe found there."""
    engine_down: bool = False
    """Its container engine hung or has no daemon: nothing runs there (one row says so)."""
    cpu: cpu_placement.HostCpuFacts | None = None
    """Boot id, usable cores and allocator libraries, when the probe ran."""
    estimate: EstimateProbe = field(default_factory=EstimateProbe)
    """The host's name, link speeds and stored profiles of the run's model."""
    memory: MemoryProbe = field(default_factory=MemoryProbe)
    """What memory the host can give (available RAM, each GPU's free memory)."""
