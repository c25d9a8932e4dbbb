"""Core lists in the kernel's cpulist format (``0-3,8,10-11``): what a rank's ``--cores``
says and what ``/sys`` and ``taskset`` read. The settings check the flag with it and the CPU
placement (``trainer/placement.py``) reads and writes it."""

from __future__ import annotations

from collections.abc import Sequence


def parse_cpulist(text: str) -> frozenset[int]:
    """``"0-3,8,10-11"`` (the kernel's cpulist format) as a set; ValueError when malformed."""
    cores: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        first, last = int(low), int(high) if sep else int(low)
        if first < 0 or last < first:
            raise ValueError(f"bad core range {part!r}")
        cores.update(range(first, last + 1))
    if not cores:
        raise ValueError(f"no cores in {text!r}")
    return frozenset(cores)


def format_cpulist(cores: Sequence[int] | frozenset[int]) -> str:
    """The shortest cpulist text for ``cores``: ``{0, 1, 2, 5}`` -> ``"0-2,5"``."""
    ordered = sorted(cores)
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)
