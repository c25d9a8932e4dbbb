"""A corral process's imports with Python's cyclic collector paused (``trainer.gc_pause``)
against the same imports with the collector as Python leaves it.

Each round runs, in fresh interpreters and in an order that rotates from round to round, the
imports each kind of corral process makes before its work, once each way:

- ``launcher``: torch's launcher and its agent, as ``trainer.launcher`` imports them;
- ``rank``: corral's trainer (``trainer.train``), as ``python -m trainer`` imports it; then,
  with the collector on again either way, ``torch._dynamo``, which every torch optimizer
  imports when it is made (the pause's frozen objects are no longer walked then);
- ``script``: what ``trainer.integrations.script_main`` imports before it runs a user's script.

The figure is each interpreter's CPU time (user + system, from its resource usage), medians over
the rounds, and the paused / default ratio.

    python bench/start_imports.py [--rounds 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

IMPORTS = {
    "launcher": ("from torch.distributed.elastic.agent.server.local_elastic_agent import "
                 "LocalElasticAgent\nfrom torch.distributed.run import main\n", ""),
    "rank": ("import trainer.train\n", "import torch._dynamo\n"),
    "script": ("import trainer.dist, trainer.integrations.rank_setup, "
               "trainer.integrations.plain_events, trainer.integrations.start_watch\n", ""),
}
"""What each kind of process imports as it starts (the part its entry point pauses the
collector for), and what it imports later with the collector on."""

PAUSED = "from trainer.gc_pause import collector_paused\nwith collector_paused():\n"


def program(kind: str, paused: bool) -> str:
    """The interpreter's program: the imports of ``kind``, the first part inside the pause when
    ``paused``."""
    first, later = IMPORTS[kind]
    if not paused:
        return first + later
    return PAUSED + "".join(f"    {line}\n" for line in first.splitlines()) + later


def cpu_seconds(code: str) -> float:
    """The CPU seconds (user + system) of a fresh interpreter running ``code``."""
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"start_imports: {code!r} exited with {child.returncode}")
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    cases = [(kind, paused) for kind in IMPORTS for paused in (False, True)]
    seconds: dict[tuple[str, bool], list[float]] = {case: [] for case in cases}
    cpu_seconds(program("rank", False))  # a first run, not counted: files into the page cache
    for round_number in range(args.rounds):
        shift = round_number % len(cases)
        for kind, paused in cases[shift:] + cases[:shift]:
            seconds[kind, paused].append(cpu_seconds(program(kind, paused)))
    results = {}
    for kind in IMPORTS:
        default_s = statistics.median(seconds[kind, False])
        paused_s = statistics.median(seconds[kind, True])
        results[kind] = {"default_cpu_s": default_s, "paused_cpu_s": paused_s,
                         "ratio": paused_s / default_s, "default_rounds": seconds[kind, False],
                         "paused_rounds": seconds[kind, True]}
        print(f"{kind:9} default {default_s:5.2f} CPU-s  paused {paused_s:5.2f} CPU-s  "
              f"ratio {paused_s / default_s:.3f}  (rounds: default "
              f"{min(seconds[kind, False]):.2f}-{max(seconds[kind, False]):.2f}, paused "
              f"{min(seconds[kind, True]):.2f}-{max(seconds[kind, True]):.2f})")
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "start_imports", "rounds": args.rounds,
                                         "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
