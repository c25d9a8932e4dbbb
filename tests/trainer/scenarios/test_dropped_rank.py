"""A rank the run went on without ends by itself once it reaches the run's store again (issue
81, item 1; trainer/membership/reach.py ``Dropped``): a host's traffic DROPped mid-run until
the survivors took it out, then its route to the membership store restored well before the
rank's own ``CUT_OFF_S`` of silence, while its old generation's connections stay dead (as when
its peers gave them up while it was cut off: nothing of theirs ever reaches it again). Its
heartbeat hears the store, so the silence never comes, and its collective never fails: it must
read that the run went on without it and end within the bound (on the old code it waited in
its old generation's collective for the group's 30 minutes)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from trainer.membership.reach import CUT_OFF_EXIT, DROPPED_GRACE_S

try:
    import netns
except ImportError:  # collected as a package module
    from tests.remote import netns

BOUND_S = 60.0
"""The most a host's processes may live once it was cut off (docs/reliability.md)."""


def _iptables(namespace: str, *rule: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, "iptables", *rule], check=True)


@pytest.mark.netns
@pytest.mark.slow
def test_a_rank_the_run_went_on_without_ends_once_it_reaches_the_store_again(
        tmp_path: Path, box: netns.NetnsCluster) -> None:
    from membership_runs import cut_off_run

    n3 = box.nodes[2]
    with cut_off_run(tmp_path / "live", box) as run:
        run.wait_for("three steps", lambda: run.steps_done() >= 3)
        cut = run.ranks[2]
        run.killed.append(cut)  # it is expected to end: not a failure of the run
        dropped_at = time.monotonic()
        try:
            for chain in ("INPUT", "OUTPUT"):
                _iptables(n3.netns, "-A", chain, "-j", "DROP")
            run.wait_for("h2 left", lambda: any(
                e["change"] == "left" and e["hosts"] == ["h2"] for e in run.membership()))
            store = str(run.store_port)  # the store's route back, its old peers' not
            _iptables(n3.netns, "-I", "INPUT", "1", "-p", "tcp", "--sport", store, "-j", "ACCEPT")
            _iptables(n3.netns, "-I", "OUTPUT", "1", "-p", "tcp", "--dport", store, "-j",
                      "ACCEPT")
            restored_after = time.monotonic() - dropped_at
            going_on = run.steps_done()
            deadline = dropped_at + BOUND_S + 30
            while cut.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)  # polling the rank's end, with a deadline
            ended_after = time.monotonic() - dropped_at
        finally:
            _iptables(n3.netns, "-F")
        said = (run.run_dir / "out-2.log").read_text(errors="replace")
        assert cut.poll() is not None, (f"h2's rank still runs {ended_after:.0f} s after the "
                                        f"DROP\n{said[-3000:]}")
        print(f"store reached again {restored_after:.1f} s after the DROP; h2's rank ended "
              f"{ended_after:.1f} s after it (exit {cut.returncode}; grace "
              f"{DROPPED_GRACE_S:g} s)")
        assert cut.returncode == CUT_OFF_EXIT, said[-3000:]
        assert "the run went on without this rank" in said
        assert ended_after <= BOUND_S, said[-3000:]
        run.wait_for("the survivors step on", lambda: run.steps_done() > going_on + 1)
