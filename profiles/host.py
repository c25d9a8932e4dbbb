"""Small probes of the CPU, memory and OS of this machine and this process.

Linux first (``/proc``, ``/sys``, cgroups), with portable fallbacks; every probe returns None
when it cannot tell rather than raising. Values are raw (bytes, counts).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import resource
import socket
import sys
from pathlib import Path

_PROC = Path("/proc")
_CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def hostname() -> str:
    """This machine's hostname."""
    return socket.gethostname()


def os_description() -> str:
    """Distribution and kernel, e.g. ``Debian GNU/Linux 12 (bookworm); Linux 6.1.0 x86_64``."""
    kernel = f"{platform.system()} {platform.release()} {platform.machine()}".strip()
    try:
        pretty = platform.freedesktop_os_release().get("PRETTY_NAME")
    except (OSError, AttributeError):
        pretty = None
    if sys.platform == "darwin":
        pretty = f"macOS {platform.mac_ver()[0]}"
    return f"{pretty}; {kernel}" if pretty else kernel


def cpu_model() -> str | None:
    """The CPU's model name, e.g. ``AMD EPYC 7763 64-Core Processor``."""
    text = _read(_PROC / "cpuinfo")
    if text:
        for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
            for line in text.splitlines():
                name, _, value = line.partition(":")
                if name.strip() == key and value.strip():
                    return value.strip()
    return platform.processor() or platform.machine() or None


def physical_cores() -> int | None:
    """Physical cores (hyper-threads counted once), or None when the OS does not say."""
    text = _read(_PROC / "cpuinfo")
    if text:
        cores: set[tuple[str, str]] = set()
        physical = core = None
        for line in [*text.splitlines(), ""]:
            name, _, value = line.partition(":")
            name = name.strip()
            if name == "physical id":
                physical = value.strip()
            elif name == "core id":
                core = value.strip()
            elif not line.strip():  # a blank line ends one logical CPU's block
                if physical is not None and core is not None:
                    cores.add((physical, core))
                physical = core = None
        if cores:
            return len(cores)
    siblings = set()
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/thread_siblings_list"):
        text = _read(path)
        if text:
            siblings.add(text.strip())
    return len(siblings) or None


def logical_cores() -> int | None:
    """Logical CPUs (hardware threads) of the machine."""
    return os.cpu_count()


def _meminfo() -> dict[str, int]:
    text = _read(_PROC / "meminfo") or ""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _cgroup_limit() -> tuple[int, int] | None:
    """``(limit, usage)`` bytes of this process's memory cgroup when it has a limit."""
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),  # cgroup v2
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),  # cgroup v1
    ):
        limit_text = (_read(_CGROUP / limit_file) or "").strip()
        usage_text = (_read(_CGROUP / usage_file) or "").strip()
        if limit_text.isdigit() and usage_text.isdigit():
            limit = int(limit_text)
            if limit < 1 << 60:  # v1 writes a huge number for "no limit"
                return limit, int(usage_text)
    return None


def ram_total() -> int | None:
    """Bytes of RAM this process may use: the machine's, or a smaller cgroup limit."""
    total = _meminfo().get("MemTotal")
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    cgroup = _cgroup_limit()
    return min(total, cgroup[0]) if cgroup else total


def ram_available() -> int | None:
    """Bytes of RAM that can still be allocated without swapping (cgroup-aware)."""
    available = _meminfo().get("MemAvailable")
    if available is None:
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    cgroup = _cgroup_limit()
    return min(available, max(0, cgroup[0] - cgroup[1])) if cgroup else available


def _maxrss_bytes() -> int:
    """Peak RSS from getrusage (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def process_rss() -> int | None:
    """This process's resident memory now, in bytes (peak RSS where ``/proc`` is missing)."""
    text = _read(_PROC / "self" / "statm")
    if text:
        fields = text.split()
        if len(fields) > 1 and fields[1].isdigit():
            return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    try:
        return _maxrss_bytes()
    except (OSError, ValueError):
        return None


def process_cpu_seconds() -> float:
    """User + system CPU seconds this process (all its threads) has used so far."""
    times = os.times()
    return times.user + times.system


def trim_heap() -> bool:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``); False where unsupported.

    glibc keeps freed blocks mapped, so without this a step reuses memory the previous step
    left behind and its peak RSS says little about what it needs.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return False
    return True


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``VmHWM``); False where the OS cannot."""
    try:
        with open(_PROC / "self" / "clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def peak_rss() -> int | None:
    """Peak RSS in bytes since the last ``reset_peak_rss`` (or since the process started)."""
    text = _read(_PROC / "self" / "status")
    if text:
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    return int(parts[1]) * 1024
    try:
        return _maxrss_bytes()
    except (OSError, ValueError):
        return None
