"""The chaos run (Jepsen's way: random faults, then invariants): a long live-membership run of
``corral run`` on three network-namespace hosts over real sshd (tests/remote/netns.py), into
which a seeded schedule (bench/_chaos_plan.py) injects faults one after the other, a few steps
apart: a worker's rank SIGKILLed, its launcher killed, its link DROPped then restored, the run
directory's disk filled then freed, the follower (``corral run``) killed and ``corral attach``
started, a planned ``corral leave``, a ``corral join``, a ``corral stop`` then ``corral run
--resume``. After each fault the invariants (bench/_chaos_checks.py) are checked:

- the run goes on (rank 0 steps on), or it ended with a named cause (then it is resumed);
- no process of the run is left on a host out of it (a cut-off host's end by itself within
  docs/reliability.md's bound; the check waits that bound and 30 s more), none anywhere after
  a stop, and no launch lock;
- the record (``run.json`` ``hosts``) agrees with the hosts: those rank 0 counts in the run
  and no other, each running a process of the run;
- after every stop: ``corral check`` passes, and the parameters of the stop's checkpoint are
  those of one uninterrupted process of as many steps (the replay, ≤ 1e-6: the run's global
  batch and learning rate do not depend on its hosts) — with ``--replay-at-stops``; the last
  stop's always.

The hosts' files live on a tmpfs of their own (``FS_SIZE``), so a disk filled is that tmpfs,
never the machine's. Needs root, iproute2, iptables and OpenSSH's sshd (as the netns tests).

    python bench/chaos.py --seed S --faults N [--budget-s S] [--json PATH] [--log PATH]
                          [--replay-at-stops]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)] if str(REPO) not in sys.path else []

from bench._chaos_plan import kind_counts, schedule  # noqa: E402
from bench._chaos_run import netns  # noqa: E402
from bench._chaos_steps import Outcome, Report, run_chaos  # noqa: E402

FS_SIZE = "1300m"
"""The hosts' tmpfs: ``corral check`` wants 1 GiB free for a workdir; the rest is the run's."""


@contextlib.contextmanager
def box_on_tmpfs(root: Path) -> Iterator[netns.NetnsCluster]:
    """Three namespace hosts whose files (workdirs, run root, keys) lie on a tmpfs at
    ``root``; everything undone on exit."""
    reason = netns.unavailable_reason()
    if reason is not None:
        raise SystemExit(f"chaos: cannot build the hosts here: {reason}")
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(root)],
                   check=True)
    try:
        box = netns.build(root, hosts=3)
        try:
            yield box
        finally:
            box.close()
    finally:
        deadline = time.monotonic() + 30
        while subprocess.run(["umount", str(root)], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:  # something of ours still holds it: detach it
                subprocess.run(["umount", "-l", str(root)], capture_output=True)
                break
            time.sleep(0.5)  # the killed processes' files close as they are reaped


def summary(report: Report) -> str:
    """The report in a few lines: seed, faults by kind, survived, broken, wall time."""
    faults = [o for o in report.outcomes if o.kind and not o.skipped]
    skipped = sum(o.skipped for o in report.outcomes)
    by_kind = ", ".join(f"{kind} {n}" for kind, n in kind_counts(o.kind for o in faults).items()
                        if n)
    broken = [o for o in faults if o.broken]
    lines = [f"chaos seed {report.seed}: {len(faults)} fault(s) injected ({by_kind}) in "
             f"{report.wall_s:.0f} s, {report.steps} steps, {report.stops} stop(s) checked",
             f"survived: {len(faults) - len(broken)} of {len(faults)}; ended with a named "
             f"cause (then resumed): {sum(o.ended for o in faults)}; skipped (moot after a "
             f"resume): {skipped}"]
    lines += [f"BROKEN {o.label}: {b}" for o in report.outcomes for b in o.broken]
    if report.params:
        lines.append("parameters against the replay: " + ", ".join(
            f"step {step} {diff:.2g}" for step, diff in report.params))
    return "\n".join(lines)


def main(argv: list[str] | None = None, progress: Callable[[Outcome], None] | None = None
         ) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--faults", type=int, required=True)
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    parser.add_argument("--log", type=Path, help="every corral command's output (default: "
                        "chaos-SEED.log in the temp folder)")
    parser.add_argument("--replay-at-stops", action="store_true",
                        help="compare against the replay at every stop, not only the last")
    parser.add_argument("--budget-s", type=float, help="start no fault after this many "
                        "seconds (then the last stop and its checks)")
    args = parser.parse_args(argv)
    # A TERM (a timeout, a kill of the bench) unwinds as an exception does: the run stopped,
    # the namespaces deleted, the tmpfs unmounted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        plan = schedule(args.seed, args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    log = args.log or Path(tempfile.gettempdir()) / f"chaos-{args.seed}.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch, \
            box_on_tmpfs(Path(scratch) / "box") as box:
        report = run_chaos(box, plan, log=log, scratch=Path(scratch), seed=args.seed,
                           replay_at_stops=args.replay_at_stops, budget_s=args.budget_s,
                           progress=progress or (lambda o: print(o.line(), flush=True)))
    print(summary(report))
    print(f"log: {log}")
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1))
    return 1 if any(o.broken for o in report.outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
