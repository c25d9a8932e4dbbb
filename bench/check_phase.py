"""How long ``corral run``'s check and push take (command -> ``launching``, the launch left
out): its first two phases as a run runs them (``remote.run.start``: ``run_check``, then
``push_code_to_hosts``) on ``--hosts`` ``local`` hosts of this machine, for a plain script.
No sshd and no namespace: it runs as is on a GPU machine with torch installed, where each
host's torch probe then finds the GPU (issue 58: 6.45 s there for three hosts at 542d7e7).

A vs B, interleaved: this tree's code and, with ``--before``, the code of a commit (``git
archive`` of it) or of a folder holding a copy of the tree (where git is not at hand: a device
machine). Each measure is a process of its own that imports the arm's code (the run's code
then pushed and each host's probes come from that tree), with fresh host workdirs, so each
push sends the tree as a first run's does; the arms take turns going first, one untimed
measure of each warms the disk cache first. Printed: each round's seconds, the medians per
arm with the ratio, and per part of the check (each host's probe, its torch probe and how it
knew, the mesh, each host's push) the medians of every arm that times them.

    python bench/check_phase.py --hosts 3 --rounds 5 --before 542d7e7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCRIPT = "print('the check phase alone: this script never runs')\n"


def _config(folder: Path, hosts: int) -> Any:
    """The cluster: ``hosts`` local hosts running this interpreter, a plain script, fresh
    workdirs under ``folder`` (the classes of the arm's own code)."""
    from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection

    script = folder / "user" / "train.py"
    script.parent.mkdir(parents=True)
    script.write_text(SCRIPT)
    return ClusterConfig(
        path=folder / "cluster.toml",
        cluster=ClusterSection(name="bench", master="h0", run_root=str(folder / "runs")),
        hosts=tuple(HostSection(name=f"h{i}", address="local", python=sys.executable,
                                workdir=str(folder / f"work-h{i}"), gpus="auto", nproc=1,
                                pin_cores=False) for i in range(hosts)),
        run=RunSection(script=str(script)))


async def _measure(config: Any) -> dict[str, Any]:
    """The check and the push, timed; the check's own timings where the code has them."""
    from remote.hosts.pool import HostPool
    from remote.records.runs import RunInfo, new_run_id
    from remote.run.lifecycle import LaunchFailed
    from remote.run.start import Launch, push_code_to_hosts, run_check

    pool = HostPool(config)
    info = RunInfo(run_id=new_run_id("bench"), cluster="bench", state="checking",
                   started=time.time(), hosts=tuple(h.name for h in config.hosts))
    launch = Launch(pool=pool, config=config, info=info)
    try:
        began = time.monotonic()
        async for _ in run_check(launch):
            pass
        checked = time.monotonic()
        async for _ in push_code_to_hosts(launch):
            pass
        pushed = time.monotonic()
    except LaunchFailed as exc:
        failures = exc.report.failures() if exc.report is not None else ()
        raise SystemExit(f"the check failed: {exc}\n" + "\n".join(
            f"  {i.host} {i.name}: {i.detail}" for i in failures)) from None
    finally:
        await pool.aclose()
    assert launch.report is not None
    timings = [{"part": f"{t.host} {t.name}", "seconds": t.seconds, "how": t.how}
               for t in getattr(launch.report, "timings", ())]
    return {"check": checked - began, "push": pushed - checked, "timings": timings}


def _inner(args: argparse.Namespace) -> None:
    """One measure, in this process, of the code of ``args.tree`` (put first on the path)."""
    tree = Path(args.tree)
    sys.path.insert(0, str(tree))
    import remote

    where = Path(remote.__file__).resolve()
    if not where.is_relative_to(tree.resolve()):
        raise SystemExit(f"imported {where}, not the code of {tree}")
    config = _config(Path(args.folder), args.hosts)
    print(json.dumps(asyncio.run(_measure(config))))


def _run_arm(tree: Path, folder: Path, hosts: int) -> dict[str, Any]:
    words = [sys.executable, str(Path(__file__).resolve()), "--inner", "--tree", str(tree),
             "--folder", str(folder), "--hosts", str(hosts)]
    done = subprocess.run(words, cwd=tree, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])})
    if done.returncode != 0:
        raise SystemExit(f"{tree}: exit {done.returncode}\n{done.stdout[-2000:]}"
                         f"{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _before_tree(before: str, root: Path) -> Path:
    """The tree of ``--before``: a folder as it is, else that commit's ``git archive``."""
    from _common import commit_tree  # here: the measuring arms import their own tree's code

    if Path(before).is_dir():
        return Path(before).resolve()
    return commit_tree(before, root / "before")


def _report(runs: dict[str, list[dict[str, Any]]]) -> None:
    from _common import markdown_table

    totals = {arm: [r["check"] + r["push"] for r in found] for arm, found in runs.items()}
    rows = [[arm, f"{statistics.median(r['check'] for r in found):.2f}",
             f"{statistics.median(r['push'] for r in found):.2f}",
             f"{statistics.median(totals[arm]):.2f}", " ".join(f"{t:.2f}" for t in totals[arm])]
            for arm, found in runs.items()]
    print("\n" + markdown_table(["code", "check (median s)", "push", "check + push",
                                 "per round"], rows))
    arms = list(runs)
    if len(arms) == 2:
        ratios = [a / b for a, b in zip(totals[arms[0]], totals[arms[1]], strict=True)]
        print(f"\n{arms[0]} / {arms[1]}, check + push: median {statistics.median(ratios):.3f} "
              f"(per round {' '.join(f'{r:.3f}' for r in ratios)}); median difference "
              f"{statistics.median(totals[arms[0]]) - statistics.median(totals[arms[1]]):+.2f} s")
    for arm, found in runs.items():
        parts: dict[str, list[float]] = {}
        hows: dict[str, Counter[str]] = {}
        for result in found:
            for timing in result["timings"]:
                parts.setdefault(timing["part"], []).append(timing["seconds"])
                hows.setdefault(timing["part"], Counter())[timing["how"]] += 1
        if parts:
            rows = [[part, f"{statistics.median(values):.3f}",
                     hows[part].most_common(1)[0][0]] for part, values in parts.items()]
            print(f"\n{arm}: the check's parts, medians (s)\n"
                  + markdown_table(["part", "seconds", "how"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", metavar="COMMIT_OR_FOLDER",
                        help="also measure the code of this commit, or of this folder")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return _inner(args)
    with tempfile.TemporaryDirectory(prefix="corral-check-bench-") as tmp:
        root = Path(tmp)
        arms = {"this tree": REPO}
        if args.before:
            arms[args.before] = _before_tree(args.before, root)
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
        names = list(arms)
        for round_ in range(-1, args.rounds):  # round -1: each arm once, untimed
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            said = []
            for arm in order:
                found = _run_arm(arms[arm], root / f"r{round_}-{names.index(arm)}", args.hosts)
                said.append(f"{arm} {found['check'] + found['push']:.2f} s (check "
                            f"{found['check']:.2f}, push {found['push']:.2f})")
                if round_ >= 0:
                    runs[arm].append(found)
            print(f"round {round_ if round_ >= 0 else 'warm-up'}: " + ", ".join(said),
                  flush=True)
    _report(runs)


if __name__ == "__main__":
    main()
