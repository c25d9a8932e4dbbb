"""Hardware detection and benchmarks for corral hosts.

Pushed to every host with the trainer: never imports ``console``, ``remote`` or ``textual``,
and importing it does not import torch (the benchmark imports it when it runs).
"""

from profiles.bench import BenchConfig, benchmark, device_name, fit_linear, measure
from profiles.nvml import GpuInfo, NvmlSession, query_nvml
from profiles.profile import Profile
from profiles.sampler import ResourceSample, ResourceSampler
from profiles.snapshot import HostSnapshot, take_snapshot
from profiles.store import find_profile, save_profile
from profiles.user_errors import CorralError, UsageError

__all__ = [
    "BenchConfig",
    "CorralError",
    "GpuInfo",
    "HostSnapshot",
    "NvmlSession",
    "Profile",
    "ResourceSample",
    "ResourceSampler",
    "UsageError",
    "benchmark",
    "device_name",
    "find_profile",
    "fit_linear",
    "measure",
    "query_nvml",
    "save_profile",
    "take_snapshot",
]
