"""What checking a reused code tree costs (issue 59): the pre-flight probe's question "is this
tree on the host?" before and after a tree is verified against its manifest.

The packages are pushed once to a temporary local workdir (``remote.hosts.push``), then two
shell commands run by ``sh -c`` alternately, ``--rounds`` times each: the marker test alone
(what a probe asked before: ``test -e <tree>/.corral-complete && touch <tree>``) and today's
``present_command`` (the manifest's hash, every file's sha256, the listing). Medians of the wall
time of each command, the ratio and the difference are printed. On a remote host the same
commands run inside the probe's one SSH command, so the difference is what a probe gains.

    python bench/code_check.py --rounds 21
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from remote.config.cluster import HostSection
from remote.hosts.push import MARKER, build_bundle, code_dir, present_command, push_code
from remote.hosts.transport import LocalTransport, shell_path


def _timed(command: str) -> float:
    began = time.perf_counter()
    subprocess.run(["sh", "-c", command], check=True)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21, help="runs of each command")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="corral-code-check-")
    try:
        bundle = build_bundle()
        host = HostSection(name="here", address="local", workdir=workdir)
        asyncio.run(push_code(LocalTransport(host), bundle))
        tree = shell_path(code_dir(workdir, bundle.digest))
        marker_only = f"test -e {tree}/{MARKER} && touch {tree}"
        manifest = present_command(workdir, bundle.digest)
        before, after = [], []
        for _ in range(args.rounds):  # interleaved: the machine's noise falls on both
            before.append(_timed(marker_only))
            after.append(_timed(manifest))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    a, b = statistics.median(before), statistics.median(after)
    print(f"tree: {bundle.files} files, {len(bundle.tar) / 1e6:.2f} MB of tar")
    print(f"marker only:    median {a * 1e3:6.1f} ms")
    print(f"manifest check: median {b * 1e3:6.1f} ms  (ratio {b / a:.2f}, "
          f"+{(b - a) * 1e3:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
