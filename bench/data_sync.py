"""The data sync against ``rsync -a`` over the same SSH: a folder of ``--files`` files
(``--size`` MiB in all; default 1 GiB in 200 files) to three namespace hosts, each behind a
link shaped to 1 Gbit/s (``tests/remote/netns_links.py``), both arms feeding the three hosts at
once, interleaved round by round:

1. **first sync**: empty host caches (and, for corral, an empty hash cache on the master: its
   time includes hashing every file);
2. **unchanged re-sync**: the same folder again;
3. **one changed file**: one file of the folder rewritten (new bytes, same size), then a sync.

corral's arm is ``remote.hosts.data_sync`` as ``corral run`` drives it (probe, then the
missing files streamed into each host's cache), told that the hosts do not share this
machine's files (the namespace hosts do: the marker would link in place and send nothing).
rsync's arm is ``rsync -a`` of the folder to each host over OpenSSH with the same key. Each
arm runs in a process of its own; corral's reports its peak resident memory (the master's
memory while it streams). Medians over ``--rounds`` are printed with the ratio corral / rsync.

Needs root, ``ip netns``, sshd, ssh-keygen, tc and rsync.

    python bench/data_sync.py                        # 1 GiB in 200 files, 3 rounds
    python bench/data_sync.py --size 256 --rounds 2  # smaller
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.remote import netns, netns_links  # noqa: E402

STEPS = ("first", "unchanged", "changed")


async def _corral_step(cluster: str, folder: Path, hashes: Path) -> dict[str, float]:
    from remote.config.read import load_cluster
    from remote.hosts.data_sync import DataProgress, probe, sync_host
    from remote.hosts.data_tree import HashCache, collect
    from remote.hosts.pool import HostPool

    config = load_cluster(Path(cluster))
    pool = HostPool(config)
    try:
        await pool.gather(lambda t: t.run("true"))  # connections open, as after the check
        started = time.perf_counter()
        data = collect(folder, True, folder, HashCache(hashes))

        async def one(transport):  # type: ignore[no-untyped-def]
            manifest = f"{transport.host.workdir}/runs/bench/hosts/{transport.host.name}.data"
            found = await probe(transport, data, None, manifest)  # as `corral run` asks
            return await sync_host(transport, data, found, manifest,
                                   DataProgress(host=transport.host.name))

        results = await pool.gather(one)
        seconds = time.perf_counter() - started
    finally:
        await pool.aclose()
    for name, result in results.items():
        if isinstance(result, BaseException):
            raise SystemExit(f"{name}: {result}")
    sent = sum(r.sent_bytes for r in results.values() if not isinstance(r, BaseException))
    return {"seconds": seconds, "sent_mib": sent / 2**20,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _rsync_step(box: dict[str, str], folder: Path) -> dict[str, float]:
    ssh = (f"ssh -i {box['key']} -o UserKnownHostsFile={box['known']} "
           "-o StrictHostKeyChecking=yes -o BatchMode=yes")
    started = time.perf_counter()
    procs = [subprocess.Popen(["rsync", "-a", "-e", ssh, f"{folder}/",
                               f"root@{address}:{box['root']}/rsync-{address}/"])
             for address in box["addresses"].split(",")]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("rsync failed")
    return {"seconds": time.perf_counter() - started}


def _inner(args: argparse.Namespace) -> None:
    if args.arm == "corral":
        result = asyncio.run(_corral_step(args.cluster, Path(args.folder), Path(args.hashes)))
    else:
        result = _rsync_step(json.loads(args.box), Path(args.folder))
    print(json.dumps(result))


def _make_folder(folder: Path, files: int, size_mib: int) -> None:
    each = size_mib * 2**20 // files
    (folder / "data").mkdir(parents=True)
    (folder / "train.py").write_text("print('hi')\n")
    for i in range(files):
        with (folder / "data" / f"shard-{i:04}.bin").open("wb") as out:
            out.write(os.urandom(each))


def _arm(box: netns.NetnsCluster, arm: str, cluster: Path, folder: Path, hashes: Path,
         spec: dict[str, str]) -> dict[str, float]:
    words = box.in_ctl(sys.executable, __file__, "--inner", "--arm", arm, "--cluster",
                       str(cluster), "--folder", str(folder), "--hashes", str(hashes),
                       "--box", json.dumps(spec))
    done = subprocess.run(words, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise SystemExit(f"{arm}: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _clear(box: netns.NetnsCluster, root: Path, hashes: Path) -> None:
    hashes.unlink(missing_ok=True)
    for node in box.nodes:
        shutil.rmtree(root / f"work-{node.name}", ignore_errors=True)
        shutil.rmtree(root / f"rsync-{node.address}", ignore_errors=True)


def _round(box: netns.NetnsCluster, root: Path, cluster: Path, folder: Path,
           spec: dict[str, str], order: tuple[str, str]) -> dict[str, dict[str, dict]]:
    hashes = root / "hashes.json"
    found: dict[str, dict[str, dict]] = {arm: {} for arm in order}
    _clear(box, root, hashes)
    for step in STEPS:
        if step == "changed":  # the same file for both arms: each sends it once
            target = folder / "data" / "shard-0007.bin"
            size = target.stat().st_size
            target.write_bytes(os.urandom(size))
        for arm in order:
            found[arm][step] = _arm(box, arm, cluster, folder, hashes, spec)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="MiB in all (default 1024)")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--cluster", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--hashes", help=argparse.SUPPRESS)
    parser.add_argument("--box", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return _inner(args)
    if (reason := netns.unavailable_reason()) or shutil.which("rsync") is None:
        raise SystemExit(f"cannot run here: {reason or 'needs rsync'}")
    root = Path(tempfile.mkdtemp(prefix="corral-data-bench-"))
    box = netns.build(root, hosts=3)
    try:
        for i in range(len(box.nodes)):
            netns_links.shape(box, i, netns_links.GIGABIT)
        folder = root / "repo"
        _make_folder(folder, args.files, args.size)
        cluster = box.write_cluster_toml(sys.executable, run='script = "repo/train.py"')
        spec = {"key": str(box.client_key), "known": str(box.known_hosts), "root": str(root),
                "addresses": ",".join(n.address for n in box.nodes)}
        rounds = []
        for i in range(args.rounds):  # interleaved, the first arm alternating
            order = ("corral", "rsync") if i % 2 == 0 else ("rsync", "corral")
            rounds.append(_round(box, root, cluster, folder, spec, order))
            print(json.dumps({"round": i, **rounds[-1]}), flush=True)
        _summary(rounds, args, netns_links.shaped_as(netns_links.GIGABIT))
    finally:
        box.close()
        shutil.rmtree(root, ignore_errors=True)


def _summary(rounds: list[dict[str, dict[str, dict]]], args: argparse.Namespace,
             link: str) -> None:
    print(f"\n{args.size} MiB in {args.files} files to 3 namespace hosts, each link {link}; "
          f"medians of {len(rounds)} rounds")
    for step in STEPS:
        corral = statistics.median(r["corral"][step]["seconds"] for r in rounds)
        rsync = statistics.median(r["rsync"][step]["seconds"] for r in rounds)
        sent = statistics.median(r["corral"][step]["sent_mib"] for r in rounds)
        print(f"{step:>10}: corral {corral:7.2f} s (sent {sent:7.1f} MiB)   rsync -a "
              f"{rsync:7.2f} s   ratio {corral / rsync:5.2f}")
    peak = max(r["corral"][s]["peak_rss_mib"] for r in rounds for s in STEPS)
    print(f"corral master peak RSS (whole process, Python and asyncssh included): {peak:.0f} MiB")


if __name__ == "__main__":
    main()
