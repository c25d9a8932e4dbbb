"""Where a rank runs on its host's CPU, and which memory allocator serves it.

Two things decide how fast a CPU rank trains, besides the model (see docs/trainer.md):

- **The allocator.** glibc returns every freed block above its mmap threshold to the kernel, so
  a large activation is mapped and page-faulted afresh every step. tcmalloc or jemalloc,
  preloaded when the host has one, keep freed memory; without them glibc is told to keep it
  (``GLIBC_TUNING``). The launcher sets this up in the environment (a preload cannot be added
  once a process runs); a rank started without that environment tunes glibc itself through
  ``mallopt``. ``CORRAL_ALLOCATOR`` names the choice; ``off`` leaves everything as it is.
- **Cores.** Ranks on one host get disjoint sets of cores, contiguous and as equal as can be,
  and as many threads as cores; a GPU rank keeps its data work on the cores near its GPU where
  the host reports them (NVML, else ``/sys/bus/pci/devices/<bus id>/local_cpulist``). With
  more ranks than cores nothing is pinned: the kernel balances them better than a fixed share.

``plan_cores`` is a pure function of the host's facts (tested for disjoint, covering sets);
``place_rank`` applies its answer to this process. Nothing here imports torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, get_args

from profiles.nvml import NvmlSession
from trainer.cpulist import format_cpulist, parse_cpulist
from trainer.launch_contract import ALLOCATOR_ENV

if TYPE_CHECKING:  # torch is imported only by the function that needs it
    import torch

    from trainer.settings.train_config import TrainConfig

Allocator = Literal["auto", "tcmalloc", "jemalloc", "glibc", "off"]
"""``[[hosts]] allocator`` choices: auto = tcmalloc, else jemalloc, else tuned glibc."""
ALLOCATORS: tuple[Allocator, ...] = get_args(Allocator)
PRELOADED = ("tcmalloc", "jemalloc")
"""Allocators that are preloaded libraries, in the order ``auto`` prefers them."""
ALLOCATOR_LIBS: Mapping[str, tuple[str, ...]] = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so",
                 "libtcmalloc.so"),
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
}
"""Library file names of each preloadable allocator, best first."""
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
                "/usr/lib", "/usr/local/lib", "/usr/local/lib64", "~/.local/lib")
"""Where a host's allocator libraries are looked for (plus ``$CONDA_PREFIX/lib`` and
``$VIRTUAL_ENV/lib``, as torch's CPU launcher does)."""
GLIBC_TUNING: Mapping[str, str] = {
    "MALLOC_MMAP_MAX_": "0",  # never mmap a block: freed memory stays in the heap
    "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1),  # practically never give the heap's top back
    "MALLOC_TOP_PAD_": str(256 << 20),  # grow the heap 256 MiB at a time
}
"""glibc's own knobs (environment form) that keep freed memory for the next step."""
JEMALLOC_CONF = "oversize_threshold:1,background_thread:true,metadata_thp:auto"
"""``MALLOC_CONF`` for jemalloc (the value torch's CPU launcher uses)."""
_MALLOPT = {"MALLOC_MMAP_MAX_": -4, "MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2}
"""glibc's ``mallopt`` parameter numbers (M_MMAP_MAX, M_TRIM_THRESHOLD, M_TOP_PAD)."""


def split_cores(cores: Sequence[int] | frozenset[int], ranks: int) -> list[tuple[int, ...]] | None:
    """Disjoint, contiguous runs of ``cores`` (sorted), one per rank, sizes differing by at
    most one and together covering every core; None when there are fewer cores than ranks."""
    ordered = sorted(cores)
    if ranks < 1 or len(ordered) < ranks:
        return None
    size, extra = divmod(len(ordered), ranks)
    out, start = [], 0
    for r in range(ranks):
        end = start + size + (1 if r < extra else 0)
        out.append(tuple(ordered[start:end]))
        start = end
    return out


def plan_cores(allowed: frozenset[int], local_ranks: int,
               near: Sequence[frozenset[int] | None] | None = None) -> list[tuple[int, ...]] | None:
    """Each local rank's cores, or None when nothing should be pinned.

    ``allowed``: the cores the ranks may use. ``near``: for GPU ranks, the cores near each
    local rank's GPU (None where the host does not say); ranks near the same cores share those
    cores out between them, disjointly where there are enough. CPU ranks (``near`` None) split
    ``allowed`` disjointly; with more ranks than cores nothing is pinned.
    """
    if near is None:
        return split_cores(allowed, local_ranks)
    groups: dict[frozenset[int], list[int]] = {}
    for r in range(local_ranks):
        wanted = near[r] if r < len(near) else None
        home = (wanted & allowed) if wanted else frozenset()
        groups.setdefault(home or allowed, []).append(r)
    out: list[tuple[int, ...]] = [()] * local_ranks
    for home, members in groups.items():
        shares = split_cores(home, len(members)) or [tuple(sorted(home))] * len(members)
        for r, share in zip(members, shares, strict=True):
            out[r] = share
    return out


# ---- allocators --------------------------------------------------------------------------


def library_dirs(environ: Mapping[str, str] | None = None) -> list[str]:
    """``LIBRARY_DIRS`` with ``~`` expanded, after the active conda or virtual environment."""
    env = os.environ if environ is None else environ
    first = [f"{env[k]}/lib" for k in ("CONDA_PREFIX", "VIRTUAL_ENV") if env.get(k)]
    return first + [os.path.expanduser(d) for d in LIBRARY_DIRS]


SHELL_LIBRARY_DIRS = ('${CONDA_PREFIX:-/nonexistent}/lib', '${VIRTUAL_ENV:-/nonexistent}/lib',
                      *(d.replace("~", "$HOME", 1) for d in LIBRARY_DIRS))
"""``library_dirs`` as a remote shell spells them (its own environment and home)."""


def allocator_candidates(dirs: Sequence[str]) -> list[tuple[str, str]]:
    """``(allocator, path)`` for every library file looked for, best first per allocator."""
    return [(name, f"{d}/{file}") for name, files in ALLOCATOR_LIBS.items() for file in files
            for d in dirs]


def pick_allocators(existing: Sequence[str], dirs: Sequence[str]) -> dict[str, str]:
    """The best library of each allocator among the ``existing`` paths (name -> path)."""
    present = set(existing)
    found: dict[str, str] = {}
    for name, path in allocator_candidates(dirs):
        if path in present:
            found.setdefault(name, path)
    return found


def find_allocators(dirs: Sequence[str] | None = None) -> dict[str, str]:
    """The preloadable allocators present on this machine (name -> library path)."""
    dirs = list(dirs) if dirs is not None else library_dirs()
    existing = [path for _, path in allocator_candidates(dirs) if os.path.exists(path)]
    return pick_allocators(existing, dirs)


def choose_allocator(setting: str, found: Mapping[str, str]) -> str:
    """The allocator a host's ranks get: ``setting`` (one of ``ALLOCATORS``) resolved against
    the libraries ``found`` there. A named library that is missing is the caller's error to
    report (``corral check`` does); here it falls back to tuned glibc."""
    if setting == "auto":
        return next((name for name in PRELOADED if name in found), "glibc")
    if setting in PRELOADED and setting not in found:
        return "glibc"
    return setting


def allocator_env(choice: str, found: Mapping[str, str],
                  preload: str | None = None) -> dict[str, str]:
    """Environment for a launcher whose ranks should use allocator ``choice`` (already
    resolved). ``preload``: the LD_PRELOAD already wanted (kept after the allocator)."""
    env = {ALLOCATOR_ENV: choice}
    if choice in PRELOADED:
        env["LD_PRELOAD"] = ":".join(p for p in (found[choice], preload) if p)
        if choice == "jemalloc":
            env["MALLOC_CONF"] = JEMALLOC_CONF
    elif choice == "glibc":
        env.update(GLIBC_TUNING)
    return env


def mapped_allocator(maps_text: str) -> str | None:
    """Which preloadable allocator a process has mapped (its /proc/<pid>/maps), if any."""
    for line in maps_text.splitlines():
        library = line.rsplit("/", 1)[-1]
        for name in PRELOADED:
            if library.startswith(f"lib{name}"):
                return name
    return None


def _self_maps() -> str:
    try:
        return Path("/proc/self/maps").read_text()
    except OSError:
        return ""


def _tune_glibc() -> bool:
    """Apply ``GLIBC_TUNING`` to this process through ``mallopt``; False where it cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(_MALLOPT[key], int(value)) == 1 for key, value in GLIBC_TUNING.items())


def settle_allocator(environ: Mapping[str, str] | None = None,
                     maps_text: str | None = None) -> str:
    """Make sure this process runs the allocator it was meant to, and say which it is.

    A preloaded library is reported as found in the process's maps; tuned glibc is reported
    when the launcher's environment tuned it or ``mallopt`` did here (a rank started without
    corral's launcher); ``off`` leaves glibc's defaults.
    """
    env = os.environ if environ is None else environ
    wanted = env.get(ALLOCATOR_ENV, "auto")
    mapped = mapped_allocator(_self_maps() if maps_text is None else maps_text)
    if mapped is not None:
        return mapped
    if wanted == "off":
        return "glibc defaults (allocator = \"off\")"
    if all(env.get(k) == v for k, v in GLIBC_TUNING.items()):
        return "glibc tuned"
    if environ is None and _tune_glibc():
        return "glibc tuned (mallopt)"
    return "glibc defaults"


# ---- applying a plan to this process -----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where this rank runs and with which allocator (reported in its start event)."""

    cores: tuple[int, ...]
    """The cores this process may run on, after placement."""
    pinned: bool
    """True when corral narrowed the process to ``cores``."""
    threads: int
    """CPU threads for torch: the given number, else one per core of ``cores``."""
    how: str
    """Why these cores, in a few words (``"1 of 2 local ranks"``, ``"near its GPU"``...)."""
    allocator: str
    """The allocator in use, as ``settle_allocator`` says."""


def _pin(cores: Sequence[int]) -> None:
    """Narrow every thread of this process to ``cores`` (threads made later inherit it)."""
    tids = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir(
        "/proc/self/task") else [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cores)
        except OSError:  # a thread that has ended meanwhile
            continue


def place_rank(*, local_rank: int, local_ranks: int, pin: bool, cores: frozenset[int] | None,
               threads: int | None,
               near: Sequence[frozenset[int] | None] | None = None) -> Placement:
    """Pin this process as ``plan_cores`` says and settle its allocator.

    ``cores``: the host's cores to share out (default: the process's current affinity).
    ``pin`` False keeps the current affinity. ``near``: each local rank's GPU-near cores.
    """
    current = frozenset(os.sched_getaffinity(0))
    allowed = (cores & current) or current if cores else current
    plan = plan_cores(allowed, local_ranks, near) if pin else None
    if plan is not None and plan[local_rank]:
        mine = plan[local_rank]
        _pin(mine)
        where = ("near its GPU" if near is not None and local_rank < len(near) and near[local_rank]
                 else f"{local_ranks} local rank(s)")
        how = f"cores {format_cpulist(mine)} of {format_cpulist(allowed)} ({where})"
    else:
        mine = tuple(sorted(current))
        if cores and allowed != current:
            _pin(sorted(allowed))
            mine = tuple(sorted(allowed))
        how = ("not pinned (pin_cores off)" if not pin else
               f"not pinned: {local_ranks} local ranks share {len(allowed)} core(s)")
    count = threads or max(1, len(mine) if plan is not None else len(mine) // local_ranks)
    return Placement(cores=mine, pinned=plan is not None, threads=count, how=how,
                     allocator=settle_allocator())


# ---- GPU ranks: the cores near a GPU -----------------------------------------------------


def sys_local_cpus(pci_bus_id: str, sys_root: str = "/sys") -> frozenset[int] | None:
    """The cores the kernel lists as local to a PCI device (None when it does not say)."""
    domain, _, rest = pci_bus_id.strip().lower().partition(":")
    bus_id = f"{domain[-4:]}:{rest}" if rest else pci_bus_id.lower()
    try:
        text = Path(sys_root, "bus/pci/devices", bus_id, "local_cpulist").read_text()
        return parse_cpulist(text)
    except (OSError, ValueError):
        return None


def gpu_near_cores(session: NvmlSession | None, cuda_index: int,
                   sys_root: str = "/sys") -> frozenset[int] | None:
    """The cores near ``cuda:<cuda_index>``: NVML's ideal affinity, else the kernel's list for
    the GPU's PCI address; None when neither says."""
    if session is None:
        return None
    handle = session.handle_for_cuda_device(cuda_index)
    if handle is None:
        return None
    cores = session.cpu_affinity(handle)
    if cores:
        return cores
    bus_id = session.pci_bus_id(handle)
    return sys_local_cpus(bus_id, sys_root) if bus_id else None


def place_gpu_ranks(*, local_rank: int, local_ranks: int, device_count: int, pin: bool,
                    cores: frozenset[int] | None, threads: int | None,
                    nvml: ModuleType | None = None, sys_root: str = "/sys") -> Placement:
    """``place_rank`` for a CUDA rank: local rank r uses ``cuda:(r % device_count)``, and its
    data work stays on the cores near that GPU where the host tells."""
    near: list[frozenset[int] | None] = [None] * local_ranks
    session = NvmlSession.open(nvml) if pin else None
    if session is not None:
        with session:
            near = [gpu_near_cores(session, r % device_count, sys_root)
                    for r in range(local_ranks)]
    return place_rank(local_rank=local_rank, local_ranks=local_ranks, pin=pin, cores=cores,
                      threads=threads, near=near if any(near) else None)


def place_this_rank(config: TrainConfig, device: torch.device, local_rank: int) -> Placement:
    """Place this rank of a torchrun launch (``LOCAL_WORLD_SIZE`` ranks on this host) as
    ``config`` says: ``place_gpu_ranks`` on CUDA, ``place_rank`` on the CPU."""
    local_ranks = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1), local_rank + 1)
    cores = parse_cpulist(config.cores) if config.cores else None
    if device.type == "cuda":
        import torch

        return place_gpu_ranks(local_rank=local_rank, local_ranks=local_ranks,
                               device_count=torch.cuda.device_count(), pin=config.pin_cores,
                               cores=cores, threads=config.threads)
    return place_rank(local_rank=local_rank, local_ranks=local_ranks, pin=config.pin_cores,
                      cores=cores, threads=config.threads)


def placement_fields(placement: Placement | None) -> dict[str, Any]:
    """The start event's ``cores``, ``placement`` and ``allocator`` (none without a placement)."""
    if placement is None:
        return {}
    return {"cores": format_cpulist(placement.cores), "placement": placement.how,
            "allocator": placement.allocator}
