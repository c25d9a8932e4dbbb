"""The chaos run's invariants (bench/chaos.py) as plain functions of what a run left: its
record (``run.json``), rank 0's events, the processes found on each host, the run root's
files, ``corral check``'s output and the parameters against their replay. Each returns the
invariants broken, as sentences (an empty list: all hold), and starts nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARAMS_TOLERANCE = 1e-6
"""The largest relative difference of any parameter tensor from the replay's."""
ENDED = ("completed", "failed", "stopped")
"""The states of a run that is over."""


def events(run_dir: Path, member: int = 0) -> list[dict[str, Any]]:
    """``member``'s events in ``run_dir`` (``metrics/rank-<member>.jsonl``), whole lines only:
    what follows the last newline is a line still being written."""
    path = run_dir / "metrics" / f"rank-{member}.jsonl"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    decoded = []
    for line in text.split("\n")[:-1]:
        try:
            decoded.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a full disk: what the run records about it is judged
    return decoded


def last_step(run_dir: Path) -> int:
    """The last step rank 0 completed (0 before the first)."""
    steps = [e["step"] for e in events(run_dir) if e.get("event") == "step"]
    return max(steps, default=0)


def changes(run_dir: Path) -> list[dict[str, Any]]:
    """Rank 0's ``membership`` events (who left or joined, when, why)."""
    return [e for e in events(run_dir) if e.get("event") == "membership"]


def members_after(members: set[str], events: Sequence[Mapping[str, Any]]) -> set[str]:
    """The hosts in the run after rank 0's ``membership`` events ``events``."""
    now = set(members)
    for event in events:
        hosts = event.get("hosts")
        for host in hosts if isinstance(hosts, list) else []:
            if event.get("change") == "left":
                now.discard(str(host))
            elif event.get("change") == "joined":
                now.add(str(host))
    return now


@dataclass(frozen=True)
class Expected:
    """The hosts in the run as rank 0's ``membership`` events have them when asked (``now``):
    ``base`` changed by its events from the ``seen``-th on. Read at each check, not once
    after the fault: a fault's effect may land after its own wait (a rank the full disk ended
    is taken out, and its event written, after the disk was freed: seed 81, faults 74 to 76)."""

    base: frozenset[str]
    seen: int

    def now(self, run_dir: Path) -> set[str]:
        return members_after(set(self.base), changes(run_dir)[self.seen:])


def went_on(before: int, after: int, *, steps: int = 2) -> list[str]:
    """The run went on: rank 0 completed ``steps`` more steps after the fault."""
    if after >= before + steps:
        return []
    return [f"the run did not go on: step {after} after the fault at step {before}"]


def named_cause(record: Mapping[str, Any]) -> list[str]:
    """A run that ended on its own ended with a named cause (its record says why)."""
    if record.get("state") not in ENDED:
        return [f"the run did not end: state {record.get('state')!r}"]
    if record.get("state") == "failed" and not str(record.get("detail") or "").strip():
        return ["the run failed without a named cause (the record's detail is empty)"]
    return []


def record_agrees(record: Mapping[str, Any], members: Iterable[str],
                  processes: Mapping[str, list[int]]) -> list[str]:
    """The record names the hosts in the run, and they are the hosts that run it: every host
    in ``members`` (the run's hosts as the faults left them) is in ``hosts`` and runs a
    process of the run; every other host is out of ``hosts``; none is both in ``hosts`` and
    ``left_hosts``."""
    expected = sorted(members)
    broken = []
    if sorted(record.get("hosts") or []) != expected:
        broken.append(f"the record's hosts {record.get('hosts')} are not the run's {expected}")
    both = sorted(set(record.get("hosts") or []) & set(record.get("left_hosts") or []))
    if both:
        broken.append(f"the record has {', '.join(both)} both in the run and left")
    idle = [host for host in expected if not processes.get(host)]
    if idle:
        broken.append(f"no process of the run on {', '.join(idle)}, which the run counts in")
    return broken


def nothing_left(processes: Mapping[str, list[int]], hosts: Iterable[str]) -> list[str]:
    """No process of the run is left on any of ``hosts``."""
    return [f"{len(processes[host])} process(es) of the run left on {host}: "
            f"{processes[host]}" for host in sorted(hosts) if processes.get(host)]


def no_lock(run_root: Path) -> list[str]:
    """No launch lock (``<run_root>/.launch-lock-*``) is left once the hosts run or stopped."""
    return [f"a launch lock is left: {path}" for path in sorted(run_root.glob(".launch-lock-*"))]


def check_passes(returncode: int, output: str) -> list[str]:
    """``corral check`` passed (exit 0); else its failing rows, briefly."""
    if returncode == 0:
        return []
    failing = [line.strip() for line in output.splitlines() if "FAIL" in line.upper()]
    return [f"`corral check` failed (exit {returncode}): " + " / ".join(failing[:4])[:600]]


def params_match(difference: float, steps: int) -> list[str]:
    """The parameters after ``steps`` steps are the replay's within ``PARAMS_TOLERANCE``."""
    if difference <= PARAMS_TOLERANCE:
        return []
    return [f"parameters after step {steps} differ from the replay's by {difference:.3g} "
            f"(> {PARAMS_TOLERANCE:g})"]
