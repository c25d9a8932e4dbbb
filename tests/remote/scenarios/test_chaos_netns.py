"""The chaos run, short and seeded (bench/chaos.py; the long one is run by hand): ``corral
run`` of a live-membership run on three network-namespace hosts over real sshd takes four
faults of four kinds from seed 4 — n3's launcher killed, the follower (``corral run``) killed
and ``corral attach`` started in its place, n2's link DROPped until the survivors take it out
and then restored (its rank, which hears the store again, must still end), n3 joining
again — and after each
the invariants hold: the run goes on, nothing of it is left on a host out of it, the record's
hosts are the run's; stopped at the end, nothing is left anywhere, no launch lock, ``corral
check`` passes and the parameters are the replay's (one process of as many
steps, ≤ 1e-6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench._chaos_plan import KINDS, schedule
from bench._chaos_steps import Outcome, run_chaos
from bench.chaos import box_on_tmpfs, summary

try:
    import netns
except ImportError:  # collected as a package module
    from tests.remote import netns  # type: ignore[no-redef]

pytestmark = [pytest.mark.netns, pytest.mark.sshd, pytest.mark.slow]

SEED, FAULTS = 4, 4
CI_KINDS = KINDS
"""Every kind (``drop_link`` was left out while a host dropped then restored could keep its
rank past the bound: docs/reliability.md, the chaos run's findings)."""


def test_four_faults_of_four_kinds_from_a_seed_break_no_invariant(tmp_path: Path) -> None:
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    plan = schedule(SEED, FAULTS, kinds=CI_KINDS)
    assert [f.kind for f in plan] == ["kill_launcher", "kill_follower", "drop_link", "join"]
    seen: list[Outcome] = []
    with box_on_tmpfs(tmp_path / "box") as box:
        report = run_chaos(box, plan, log=tmp_path / "chaos.log", scratch=tmp_path,
                           seed=SEED, replay_at_stops=False, progress=seen.append)
    print(summary(report))
    assert [o.kind for o in seen] == [*(f.kind for f in plan), ""]  # every fault, then the end
    log = (tmp_path / "chaos.log").read_text()[-4000:]
    assert [o.broken for o in seen] == [[]] * (FAULTS + 1), "\n".join(o.line() for o in seen) + log
    ((step, diff),) = report.params
    assert step == report.steps and diff <= 1e-6
