"""``python -m profiles [--json]``: print what this host is.

Plain text on purpose: the hosts get only ``trainer``, ``profiles`` and torch, no rich.
``--json`` prints ``HostSnapshot.to_dict()`` (keys in ``docs/profiles.md``) on one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from profiles.snapshot import HostSnapshot, take_snapshot


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f} GiB"


def _opt(value: object, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}{unit}"
    return f"{value}{unit}"


def format_snapshot(snapshot: HostSnapshot) -> str:
    """A plain, aligned text table of a snapshot."""
    cuda = (
        f"yes, {snapshot.cuda_device_count} device(s)" if snapshot.cuda_available else "no"
    )
    rows = [
        ("host", snapshot.hostname),
        ("os", snapshot.os),
        ("python", snapshot.python_version),
        ("torch", _opt(snapshot.torch_version)),
        ("cuda", cuda),
        ("cpu", _opt(snapshot.cpu_model)),
        ("cores", f"{_opt(snapshot.physical_cores)} physical, "
                  f"{_opt(snapshot.logical_cores)} logical"),
        ("ram", f"{_bytes(snapshot.ram_total)} total, {_bytes(snapshot.ram_available)} available"),
        ("driver", _opt(snapshot.driver_version)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    if not snapshot.gpus:
        lines.append(f"{'gpus':<{width}}  none seen by NVML")
        return "\n".join(lines)
    header = ("gpu", "name", "memory free / total", "cc", "util", "power")
    table = [header] + [
        (
            str(gpu.index),
            _opt(gpu.name),
            f"{_bytes(gpu.memory_free)} / {_bytes(gpu.memory_total)}",
            _opt(gpu.compute_capability),
            _opt(gpu.utilization, " %"),
            _opt(gpu.power_w, " W"),
        )
        for gpu in snapshot.gpus
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines.append("")
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print this host's snapshot; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m profiles",
        description="Show this host: CPU, memory, torch, CUDA and every GPU NVML sees.",
    )
    parser.add_argument("--json", action="store_true",
                        help="print the snapshot as one line of JSON (keys in docs/profiles.md)")
    args = parser.parse_args(argv)
    snapshot = take_snapshot()
    print(json.dumps(snapshot.to_dict()) if args.json else format_snapshot(snapshot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
