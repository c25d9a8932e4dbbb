"""The data sync against ``rsync -a`` over the same SSH: a folder of ``--files`` files
(``--size`` MiB in all; default 1 GiB in 200 files) to three namespace hosts, each behind a
link shaped to 1 Gbit/s (``tests/remote/netns_links.py``), every arm feeding the three hosts at
once, interleaved round by round:

1. **first sync**: empty host caches (and, for corral, an empty hash cache on the master: its
   time includes hashing every file);
2. **unchanged re-sync**: the same folder again;
3. **one changed file**: one file of the folder rewritten (new bytes, same size), then a sync.

corral's arms are ``remote.hosts.data_sync`` as ``corral run`` drives it (probe, then the
missing files streamed into each host's cache), told that the hosts do not share this
machine's files (the namespace hosts do: the marker would link in place and send nothing):
``corral`` feeds each host that lacks 64 MiB or more from a sender process of its own,
``corral-1proc`` feeds every host from the one process (as before the senders), each arm
with host caches and a hash cache of its own. rsync's arm is ``rsync -a`` of the folder to
each host over OpenSSH with the same key. Each arm runs in a process of its own and reports
its wall time, the CPU seconds spent on this side (itself and its children: senders, or
rsync and its ssh) and, for corral, its peak resident memory and its largest child's; the
unchanged re-sync is split into the walk with the hash cache and the slowest host's probe.
Arms interleaved, the first arm rotating per round; medians over ``--rounds``, with the
ratio to rsync. ``--plain-shell`` gives every host an empty ``~/.bashrc`` (a host whose
login shell starts plain, not this dev machine's ``pyenv init``).

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
CORRAL_ARMS = ("corral", "corral-1proc")
"""``corral``: each host fed by a sender process of its own (``remote.hosts.data_sender``);
``corral-1proc``: every host fed from the master's one process (before the senders)."""


async def _corral_step(cluster: str, folder: Path, hashes: Path,
                       senders: bool) -> dict[str, float]:
    from remote.config.read import load_cluster
    from remote.hosts.data_sync import DataProgress, probe, sync_host
    from remote.hosts.data_tree import HashCache, collect
    from remote.hosts.pool import HostPool

    config = load_cluster(Path(cluster))
    pool = HostPool(config)
    probed: list[float] = []
    try:
        await pool.gather(lambda t: t.run("true"))  # connections open, as after the check
        started, cpu = time.perf_counter(), _cpu()
        data = collect(folder, True, folder, HashCache(hashes))
        collected = time.perf_counter() - started

        async def one(transport):  # type: ignore[no-untyped-def]
            manifest = f"{transport.host.workdir}/runs/bench/hosts/{transport.host.name}.data"
            found = await probe(transport, data, None, manifest)  # as `corral run` asks
            probed.append(time.perf_counter() - started - collected)
            return await sync_host(transport, data, found, manifest,
                                   DataProgress(host=transport.host.name),
                                   config.ssh if senders else None)

        results = await pool.gather(one)
        seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    finally:
        await pool.aclose()
    for name, result in results.items():
        if isinstance(result, BaseException):
            raise SystemExit(f"{name}: {result}")
    sent = sum(r.sent_bytes for r in results.values() if not isinstance(r, BaseException))
    return {"seconds": seconds, "cpu_s": cpu, "sent_mib": sent / 2**20, "collect_s": collected,
            "probe_s": max(probed, default=0.0),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "sender_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (senders; rsync and its ssh)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def _rsync_step(box: dict[str, str], folder: Path) -> dict[str, float]:
    ssh = (f"ssh -i {box['key']} -o UserKnownHostsFile={box['known']} "
           "-o StrictHostKeyChecking=yes -o BatchMode=yes")
    started, cpu = time.perf_counter(), _cpu()
    procs = [subprocess.Popen(["rsync", "-a", "-e", ssh, f"{folder}/",
                               f"root@{address}:{box['root']}/rsync-{address}/"])
             for address in box["addresses"].split(",")]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("rsync failed")
    return {"seconds": time.perf_counter() - started, "cpu_s": _cpu() - cpu}


def _inner(args: argparse.Namespace) -> None:
    if args.arm in CORRAL_ARMS:
        result = asyncio.run(_corral_step(args.cluster, Path(args.folder), Path(args.hashes),
                                          senders=args.arm == "corral"))
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


def _arm(box: netns.NetnsCluster, arm: str, root: Path, folder: Path,
         spec: dict[str, str]) -> dict[str, float]:
    """One step of one arm, in a process of its own: each corral arm has its own cluster.toml
    (its own host workdirs, so its own host caches) and its own hash cache."""
    words = box.in_ctl(sys.executable, __file__, "--inner", "--arm", arm, "--cluster",
                       str(root / f"cluster-{arm}.toml"), "--folder", str(folder),
                       "--hashes", str(root / f"hashes-{arm}.json"), "--box", json.dumps(spec))
    done = subprocess.run(words, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise SystemExit(f"{arm}: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _clusters(box: netns.NetnsCluster, root: Path) -> None:
    """``cluster-<arm>.toml`` for each corral arm, host workdirs ``work-<arm>-<node>``."""
    text = box.write_cluster_toml(sys.executable, run='script = "repo/train.py"').read_text()
    for arm in CORRAL_ARMS:
        (root / f"cluster-{arm}.toml").write_text(text.replace("/work-", f"/work-{arm}-"))


def _clear(box: netns.NetnsCluster, root: Path) -> None:
    for arm in CORRAL_ARMS:
        (root / f"hashes-{arm}.json").unlink(missing_ok=True)
        for node in box.nodes:
            shutil.rmtree(root / f"work-{arm}-{node.name}", ignore_errors=True)
    for node in box.nodes:
        shutil.rmtree(root / f"rsync-{node.address}", ignore_errors=True)


def _round(box: netns.NetnsCluster, root: Path, folder: Path, spec: dict[str, str],
           order: list[str]) -> dict[str, dict[str, dict]]:
    found: dict[str, dict[str, dict]] = {arm: {} for arm in order}
    _clear(box, root)
    for step in STEPS:
        if step == "changed":  # the same file for every arm: each sends it once
            target = folder / "data" / "shard-0007.bin"
            size = target.stat().st_size
            target.write_bytes(os.urandom(size))
        for arm in order:
            found[arm][step] = _arm(box, arm, root, folder, spec)
    return found


def _plain_shell(box: netns.NetnsCluster, root: Path) -> None:
    """Each node's sshd (in a mount namespace of its own, ``ip netns exec``'s) sees an empty
    ``~/.bashrc``: every command starts as on a host whose login shell start is plain, not
    this dev machine's (root's ``pyenv init``)."""
    empty = root / "empty-bashrc"
    empty.write_text("")
    rc = Path.home() / ".bashrc"
    for node in box.nodes:
        assert node.sshd is not None
        subprocess.run(["nsenter", "-t", str(node.sshd.pid), "-m", "mount", "--bind",
                        str(empty), str(rc)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="MiB in all (default 1024)")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain-shell", action="store_true",
                        help="hosts whose ~/.bashrc is empty (a plain login shell start)")
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
        if args.plain_shell:
            _plain_shell(box, root)
        folder = root / "repo"
        _make_folder(folder, args.files, args.size)
        _clusters(box, root)
        spec = {"key": str(box.client_key), "known": str(box.known_hosts), "root": str(root),
                "addresses": ",".join(n.address for n in box.nodes)}
        arms = [*CORRAL_ARMS, "rsync"]
        rounds = []
        for i in range(args.rounds):  # interleaved, the first arm rotating
            order = arms[i % len(arms):] + arms[:i % len(arms)]
            rounds.append(_round(box, root, folder, spec, order))
            print(json.dumps({"round": i, **rounds[-1]}), flush=True)
        _summary(rounds, args, netns_links.shaped_as(netns_links.GIGABIT))
    finally:
        box.close()
        shutil.rmtree(root, ignore_errors=True)


def _summary(rounds: list[dict[str, dict[str, dict]]], args: argparse.Namespace,
             link: str) -> None:
    shell = "an empty ~/.bashrc" if args.plain_shell else "this machine's ~/.bashrc"
    print(f"\n{args.size} MiB in {args.files} files to 3 namespace hosts, each link {link}, "
          f"{shell}; medians of {len(rounds)} rounds")
    for step in STEPS:
        rsync = statistics.median(r["rsync"][step]["seconds"] for r in rounds)
        line = f"{step:>10}: rsync -a {rsync:6.2f} s"
        for arm in CORRAL_ARMS:
            took = statistics.median(r[arm][step]["seconds"] for r in rounds)
            line += f"   {arm} {took:6.2f} s ({took / rsync:4.2f} x)"
        print(line)
    cpu = {arm: statistics.median(r[arm]["first"]["cpu_s"] for r in rounds)
           for arm in (*CORRAL_ARMS, "rsync")}
    print("first sync, CPU seconds on this side (the hosts' sshd and receivers not counted): "
          + ", ".join(f"{arm} {seconds:.1f} s" for arm, seconds in cpu.items()))
    for arm in CORRAL_ARMS:
        probe = statistics.median(r[arm]["unchanged"]["probe_s"] for r in rounds)
        walk = statistics.median(r[arm]["unchanged"]["collect_s"] for r in rounds)
        peak = max(r[arm][s]["peak_rss_mib"] for r in rounds for s in STEPS)
        senders = max(r[arm][s]["sender_peak_rss_mib"] for r in rounds for s in STEPS)
        print(f"{arm}: unchanged re-sync = walk and hash cache {walk:.2f} s + probe {probe:.2f} s"
              f" (slowest host); master peak RSS {peak:.0f} MiB, its largest child process "
              f"(a sender) {senders:.0f} MiB")


if __name__ == "__main__":
    main()
