"""The data sync against ``rsync -a`` over the same SSH: a folder of ``--files`` files
(``--size`` MiB in all; default 1 GiB in 200 files) to three namespace hosts, each behind a
link shaped to 1 Gbit/s (``tests/remote/netns_links.py``), every arm feeding the three hosts at
once, interleaved round by round:

1. **first sync**: empty host caches (and, for corral, an empty hash cache on the master: its
   time includes hashing every file);
2. **unchanged re-sync**: the same folder again;
3. **one changed file**: one file of the folder rewritten (new bytes, same size), then a sync;
4. **changed region**: one ``--region`` MiB region rewritten in the middle of a ``--shard``
   MiB shard (``data/big.bin``, beside the others), then a sync: corral sends the region's
   content-defined chunks (``remote.hosts.data_chunks``), rsync its delta. The MiB sent per
   host is printed for both (rsync's ``--stats``).

corral's arms are ``remote.hosts.data_sync`` as ``corral run`` drives it
(``remote.run.data_push``: probe, the new files as large as a cached one hashed, then the
missing files streamed into each host's cache), told that the hosts do not share this
machine's files (the namespace hosts do: the marker would link in place and send nothing),
each arm with host caches and a hash cache of its own: ``corral`` feeds every host that
lacks 64 MiB or more through OpenSSH's ``ssh`` (``remote.hosts.data_openssh``);
``corral-asyncssh`` as if ``ssh`` were not installed: the first such host from its own
process, the others from a sender process each (asyncssh);
``--before COMMIT`` adds the arm ``corral@COMMIT``: this bench's corral arm as it was at that
commit (``git archive`` of it, run from a temporary folder). rsync's arm is ``rsync -a`` of
the folder to each host over OpenSSH with the same key. Each arm runs in a process of its own
and reports its wall time, the CPU seconds spent on this side (itself and its children:
senders, or rsync and its ssh) and, for corral, the peak resident memory of its own process
and of its senders, summed (each sender reports its own peak: all counted, the pages they
share counted in each); the unchanged re-sync is split into the walk with the hash
cache and the slowest host's probe.
Arms interleaved, the first arm rotating per round; medians over ``--rounds``, with the
ratio to rsync. ``--plain-shell`` gives every host an empty ``~/.bashrc`` (a host whose
login shell starts plain, not this dev machine's ``pyenv init``).

Needs root, ``ip netns``, sshd, ssh-keygen, tc and rsync.

    python bench/data_sync.py                        # 1 GiB in 200 files, 3 rounds
    python bench/data_sync.py --size 256 --rounds 2  # smaller
    python bench/data_sync.py --before d971aa4       # and the code of that commit, interleaved
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
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.remote import netns, netns_links  # noqa: E402

STEPS = ("first", "unchanged", "changed", "region")
T = TypeVar("T")
CORRAL_ARMS = ("corral", "corral-asyncssh")
"""``corral``: every host that lacks much fed through OpenSSH's ``ssh``; ``corral-asyncssh``:
no ``ssh`` (``remote.hosts.data_openssh.CLIENT`` None), the first such host fed from the
master's process, the others from a sender process each (``data_sender.MASTER_FEEDS``)."""


async def _corral_step(cluster: str, folder: Path, hashes: Path,
                       openssh: bool) -> dict[str, float]:
    from remote.config.read import load_cluster
    from remote.hosts import data_openssh, data_sender
    from remote.hosts.data_sync import DataProgress, probe, sync_host, to_send
    from remote.hosts.data_tree import HashCache, collect, hash_alike
    from remote.hosts.pool import HostPool

    if not openssh:
        data_openssh.CLIENT = None
    config = load_cluster(Path(cluster))
    pool = HostPool(config)
    try:
        await pool.gather(lambda t: t.run("true"))  # connections open, as after the check
        started, cpu = time.perf_counter(), _cpu()
        data = collect(folder, True, folder, HashCache(hashes))
        collected = time.perf_counter() - started
        manifest = {h.name: f"{h.workdir}/runs/bench/hosts/{h.name}.data" for h in config.hosts}
        found = _ok(await pool.gather(lambda t: probe(t, data, None, manifest[t.host.name])))
        probed = time.perf_counter() - started - collected
        data = hash_alike(data, {size for one in found.values() for _, size in one.alike})
        senders = data_sender.fed_by_senders({name: sum(f.size for f in to_send(data, one))
                                              for name, one in found.items()},
                                             data_openssh.openssh_hosts(config.hosts, config.ssh))
        results = _ok(await pool.gather(lambda t: sync_host(
            t, data, found[t.host.name], manifest[t.host.name],
            DataProgress(host=t.host.name), config.ssh if t.host.name in senders else None)))
        seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    finally:
        await pool.aclose()
    sent = sum(r.sent_bytes for r in results.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fed = [r.sender_peak_kib / 1024 for r in results.values() if r.sender_peak_kib]
    return {"seconds": seconds, "cpu_s": cpu, "sent_mib": sent / 2**20, "collect_s": collected,
            "probe_s": probed, "peak_rss_mib": peak, "senders": len(fed),
            "all_peak_rss_mib": peak + sum(fed)}


def _ok(results: dict[str, T | BaseException]) -> dict[str, T]:
    """Every host's result; the bench stops at a host's error."""
    for name, result in results.items():
        if isinstance(result, BaseException):
            raise SystemExit(f"{name}: {result}")
    return {name: result for name, result in results.items()
            if not isinstance(result, BaseException)}


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (senders; rsync and its ssh)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def _rsync_step(box: dict[str, str], folder: Path) -> dict[str, float]:
    ssh = (f"ssh -i {box['key']} -o UserKnownHostsFile={box['known']} "
           "-o StrictHostKeyChecking=yes -o BatchMode=yes")
    started, cpu = time.perf_counter(), _cpu()
    procs = [subprocess.Popen(["rsync", "-a", "--stats", "-e", ssh, f"{folder}/",
                               f"root@{address}:{box['root']}/rsync-{address}/"],
                              stdout=subprocess.PIPE, text=True)
             for address in box["addresses"].split(",")]
    said = [p.communicate()[0] for p in procs]
    if any(p.returncode != 0 for p in procs):
        raise SystemExit("rsync failed")
    seconds = time.perf_counter() - started
    sent = sum(int(line.split(":")[1].split()[0].replace(",", "")) for out in said
               for line in out.splitlines() if line.startswith("Total bytes sent:"))
    return {"seconds": seconds, "cpu_s": _cpu() - cpu, "sent_mib": sent / 2**20}


def _inner(args: argparse.Namespace) -> None:
    if args.arm in CORRAL_ARMS:
        result = asyncio.run(_corral_step(args.cluster, Path(args.folder), Path(args.hashes),
                                          openssh=args.arm == "corral"))
    else:
        result = _rsync_step(json.loads(args.box), Path(args.folder))
    print(json.dumps(result))


def _make_folder(folder: Path, files: int, size_mib: int, shard_mib: int) -> None:
    each = size_mib * 2**20 // files
    (folder / "data").mkdir(parents=True)
    (folder / "train.py").write_text("print('hi')\n")
    with (folder / "data" / "big.bin").open("wb") as out:
        for _ in range(shard_mib):
            out.write(os.urandom(2**20))
    for i in range(files):  # a MiB at a time: the arms' processes, forked from this one,
        with (folder / "data" / f"shard-{i:04}.bin").open("wb") as out:  # report its peak too
            for at in range(0, each, 2**20):
                out.write(os.urandom(min(2**20, each - at)))


def _arm(box: netns.NetnsCluster, arm: str, root: Path, folder: Path,
         spec: dict[str, str]) -> dict[str, float]:
    """One step of one arm, in a process of its own: each corral arm has its own cluster.toml
    (its own host workdirs, so its own host caches) and its own hash cache; ``corral@COMMIT``
    runs that commit's bench (its corral arm) from ``root/before``."""
    code = root / "before" if "@" in arm else REPO
    words = box.in_ctl(sys.executable, str(code / "bench" / "data_sync.py"), "--inner",
                       "--arm", arm.split("@")[0], "--cluster", str(root / f"cluster-{arm}.toml"),
                       "--folder", str(folder), "--hashes", str(root / f"hashes-{arm}.json"),
                       "--box", json.dumps(spec))
    done = subprocess.run(words, capture_output=True, text=True, cwd=code,  # its own `-m`
                          env={**os.environ, "PYTHONPATH": str(code)})
    if done.returncode != 0:
        raise SystemExit(f"{arm}: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _clusters(box: netns.NetnsCluster, root: Path, arms: list[str]) -> None:
    """``cluster-<arm>.toml`` for each corral arm, host workdirs ``work-<arm>-<node>``."""
    text = box.write_cluster_toml(sys.executable, run='script = "repo/train.py"').read_text()
    for arm in arms:
        (root / f"cluster-{arm}.toml").write_text(text.replace("/work-", f"/work-{arm}-"))


def _clear(box: netns.NetnsCluster, root: Path, arms: list[str]) -> None:
    for arm in arms:
        (root / f"hashes-{arm}.json").unlink(missing_ok=True)
        for node in box.nodes:
            shutil.rmtree(root / f"work-{arm}-{node.name}", ignore_errors=True)
    for node in box.nodes:
        shutil.rmtree(root / f"rsync-{node.address}", ignore_errors=True)


def _round(box: netns.NetnsCluster, root: Path, folder: Path, spec: dict[str, str],
           order: list[str], region: int) -> dict[str, dict[str, dict]]:
    found: dict[str, dict[str, dict]] = {arm: {} for arm in order}
    _clear(box, root, [arm for arm in order if arm != "rsync"])
    for step in STEPS:
        if step == "changed":  # the same file for every arm: each sends it once
            target = folder / "data" / "shard-0007.bin"
            size = target.stat().st_size
            target.write_bytes(os.urandom(size))
        if step == "region":  # the middle of the large shard rewritten, in place
            with (folder / "data" / "big.bin").open("r+b") as shard:
                shard.seek(shard.seek(0, os.SEEK_END) // 2 - region // 2)
                shard.write(os.urandom(region))
        for arm in order:
            before = _host_cpu(box)
            found[arm][step] = _arm(box, arm, root, folder, spec)
            found[arm][step]["host_cpu_s"] = _host_cpu(box) - before
    return found


def _host_cpu(box: netns.NetnsCluster) -> float:
    """CPU seconds the hosts spent on finished sessions (each node's sshd and everything it
    ran: decryption, receivers, rsync's far end), once those sessions have ended: the
    listening sshd counts a session's CPU when it reaps it."""
    deadline = time.monotonic() + 30.0
    while box.processes_left() and time.monotonic() < deadline:
        time.sleep(0.05)
    ticks = 0
    for node in box.nodes:
        assert node.sshd is not None
        fields = Path(f"/proc/{node.sshd.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


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
    parser.add_argument("--shard", type=int, default=50,
                        help="MiB of the shard whose region changes (default 50)")
    parser.add_argument("--region", type=int, default=5,
                        help="MiB of that shard rewritten (default 5)")
    parser.add_argument("--plain-shell", action="store_true",
                        help="hosts whose ~/.bashrc is empty (a plain login shell start)")
    parser.add_argument("--before", metavar="COMMIT",
                        help="also run this bench's corral arm as it was at COMMIT")
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
    corral = [*CORRAL_ARMS] + ([f"corral@{args.before}"] if args.before else [])
    if args.before:
        from _common import commit_tree

        commit_tree(args.before, root / "before")
    box = netns.build(root, hosts=3)
    try:
        for i in range(len(box.nodes)):
            netns_links.shape(box, i, netns_links.GIGABIT)
        if args.plain_shell:
            _plain_shell(box, root)
        folder = root / "repo"
        _make_folder(folder, args.files, args.size, args.shard)
        _clusters(box, root, corral)
        spec = {"key": str(box.client_key), "known": str(box.known_hosts), "root": str(root),
                "addresses": ",".join(n.address for n in box.nodes)}
        arms = [*corral, "rsync"]
        rounds = []
        for i in range(args.rounds):  # interleaved, the first arm rotating
            order = arms[i % len(arms):] + arms[:i % len(arms)]
            rounds.append(_round(box, root, folder, spec, order, args.region << 20))
            print(json.dumps({"round": i, **rounds[-1]}), flush=True)
        _summary(rounds, args, netns_links.shaped_as(netns_links.GIGABIT), corral)
    finally:
        box.close()
        shutil.rmtree(root, ignore_errors=True)


def _summary(rounds: list[dict[str, dict[str, dict]]], args: argparse.Namespace,
             link: str, corral: list[str]) -> None:
    shell = "an empty ~/.bashrc" if args.plain_shell else "this machine's ~/.bashrc"
    print(f"\n{args.size} MiB in {args.files} files and a {args.shard} MiB shard to 3 namespace "
          f"hosts, each link {link}, {shell}; medians of {len(rounds)} rounds")
    for step in STEPS:
        rsync = statistics.median(r["rsync"][step]["seconds"] for r in rounds)
        line = f"{step:>10}: rsync -a {rsync:6.2f} s"
        for arm in corral:
            took = statistics.median(r[arm][step]["seconds"] for r in rounds)
            line += f"   {arm} {took:6.2f} s ({took / rsync:4.2f} x)"
        print(line)
    sent = {arm: statistics.median(r[arm]["region"]["sent_mib"] for r in rounds) / 3
            for arm in (*corral, "rsync")}
    print(f"changed region ({args.region} MiB of a {args.shard} MiB shard), MiB sent per host: "
          + ", ".join(f"{arm} {mib:.2f}" for arm, mib in sent.items()))
    for step in STEPS:  # a loaded machine: the spread says as much as the median
        print(f"{step:>10}, seconds min-max: " + ", ".join(
            f"{arm} {min(r[arm][step]['seconds'] for r in rounds):.2f}-"
            f"{max(r[arm][step]['seconds'] for r in rounds):.2f}" for arm in (*corral, "rsync")))
    cpu = {arm: statistics.median(r[arm]["first"]["cpu_s"] for r in rounds)
           for arm in (*corral, "rsync")}
    print("first sync, CPU seconds on this side (the hosts' sshd and receivers not counted): "
          + ", ".join(f"{arm} {seconds:.1f} s" for arm, seconds in cpu.items()))
    hosts = {arm: statistics.median(r[arm]["first"]["host_cpu_s"] for r in rounds)
             for arm in (*corral, "rsync")}
    print("first sync, CPU seconds on the hosts (sshd, receivers): "
          + ", ".join(f"{arm} {seconds:.1f} s" for arm, seconds in hosts.items()))
    for arm in corral:
        probe = statistics.median(r[arm]["unchanged"]["probe_s"] for r in rounds)
        walk = statistics.median(r[arm]["unchanged"]["collect_s"] for r in rounds)
        peak = max(r[arm][s]["peak_rss_mib"] for r in rounds for s in STEPS)
        print(f"{arm}: unchanged re-sync = walk and hash cache {walk:.2f} s + probe {probe:.2f} s"
              f" (slowest host); master peak RSS {peak:.0f} MiB", end="")
        if "all_peak_rss_mib" in rounds[0][arm]["first"]:
            every = max(r[arm][s]["all_peak_rss_mib"] for r in rounds for s in STEPS)
            senders = max(r[arm][s]["senders"] for r in rounds for s in STEPS)
            print(f", with its {senders} senders' peaks added {every:.0f} MiB")
        else:  # an older bench: its largest child's
            senders = max(r[arm][s]["sender_peak_rss_mib"] for r in rounds for s in STEPS)
            print(f", its largest child (a sender) {senders:.0f} MiB")


if __name__ == "__main__":
    main()
