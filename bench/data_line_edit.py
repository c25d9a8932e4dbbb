"""One line edited in a large dataset, then synced again: what the data sync sends per host,
side by side with ``rsync -a`` over the same SSH (issue 80's goal: a one-line edit in a 10 GB
dataset sends < 1 MiB a host).

A folder of ``--files`` files of random bytes (``--size`` MiB in all) goes to one namespace host
behind a link shaped to 1 Gbit/s (``bench/data_sync.py``'s hosts, arms and host caches): a first
sync, an unchanged re-sync, then one line of text inserted in the middle of one file (every
byte after it shifts, as an edit of a text shard does) and a sync. corral's arm is
``remote.hosts.data_sync`` as ``corral run`` drives it (content-defined chunks: the chunks
around the line are new, the rest are found in the host's cache); rsync's arm sends its delta.

Needs root, ``ip netns``, sshd, ssh-keygen, tc and rsync, and about three times ``--size`` of
free disk (the folder, corral's host cache, rsync's copy).

    python bench/data_line_edit.py                 # 10 GiB in 10 files
    python bench/data_line_edit.py --size 1024     # smaller
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from data_sync import _arm, _clusters, _make_folder  # noqa: E402

from tests.remote import netns, netns_links  # noqa: E402

STEPS = ("first", "unchanged", "line")
ARMS = ("corral", "rsync")
LINE = b"an edited line of the dataset, as a person would type it\n"


def insert_line(path: Path, line: bytes = LINE) -> None:
    """``line`` inserted in the middle of ``path``: every byte after it moves (rewritten
    through a temporary file beside it, then renamed over it)."""
    size = path.stat().st_size
    moved = path.with_suffix(".edit")
    with path.open("rb") as src, moved.open("wb") as out:
        # A MiB at a time: the arms' processes, forked from this one, report its peak too.
        left = size // 2
        while left:
            left -= out.write(src.read(min(left, 1 << 20)))
        out.write(line)
        shutil.copyfileobj(src, out, 1 << 20)
    moved.replace(path)


def _steps(box: netns.NetnsCluster, root: Path, folder: Path,
           spec: dict[str, str]) -> dict[str, dict[str, dict]]:
    found: dict[str, dict[str, dict]] = {arm: {} for arm in ARMS}
    for step in STEPS:
        if step == "line":
            insert_line(folder / "data" / "shard-0001.bin")
        for arm in ARMS:
            found[arm][step] = _arm(box, arm, root, folder, spec)
            print(json.dumps({"arm": arm, "step": step, **found[arm][step]}), flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10240, help="MiB in all (default 10240)")
    parser.add_argument("--files", type=int, default=10)
    args = parser.parse_args()
    if (reason := netns.unavailable_reason()) or shutil.which("rsync") is None:
        raise SystemExit(f"cannot run here: {reason or 'needs rsync'}")
    root = Path(tempfile.mkdtemp(prefix="corral-line-bench-"))
    box = netns.build(root, hosts=1)
    try:
        netns_links.shape(box, 0, netns_links.GIGABIT)
        folder = root / "repo"
        _make_folder(folder, args.files, args.size, 1)
        _clusters(box, root, ["corral"])
        spec = {"key": str(box.client_key), "known": str(box.known_hosts), "root": str(root),
                "addresses": box.nodes[0].address}
        found = _steps(box, root, folder, spec)
        print(f"\n{args.size} MiB in {args.files} files to one namespace host, link "
              f"{netns_links.shaped_as(netns_links.GIGABIT)}; one line inserted in one file")
        for step in STEPS:
            print(f"{step:>10}: " + ", ".join(
                f"{arm} {found[arm][step]['seconds']:.2f} s, "
                f"{found[arm][step]['sent_mib']:.3f} MiB sent" for arm in ARMS))
        peak = max(found["corral"][step]["peak_rss_mib"] for step in STEPS)
        print(f"corral: master peak RSS {peak:.0f} MiB")
    finally:
        box.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
