"""The runs (slow tier) of what ``tests/trainer/test_cut_off_rank.py`` tests: a rank cut off from
its run ends by itself (issue 81, item 1; trainer/membership/reach.py): the watchdog's logic
without a process, then a live run on network-namespace hosts whose third host's traffic is
DROPped mid-run: the survivors go on, and the cut-off rank, which hears nothing (no connection
closes), ends within ``CUT_OFF_S`` of the store's last answer, saying why, instead of waiting
out the group's 30-minute timeout."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from trainer.membership.reach import (
    CUT_OFF_EXIT,
    CUT_OFF_S,
)

try:
    import netns
except ImportError:  # collected as a package module
    from tests.remote import netns




@pytest.mark.netns
@pytest.mark.slow
def test_a_rank_whose_host_is_cut_off_mid_run_ends_by_itself_within_the_bound(
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
                subprocess.run(["ip", "netns", "exec", n3.netns, "iptables", "-A", chain,
                                "-j", "DROP"], check=True)
            run.wait_for("h2 left", lambda: any(
                e["change"] == "left" and e["hosts"] == ["h2"] for e in run.membership()))
            going_on = run.steps_done()
            code = cut.wait(timeout=CUT_OFF_S + 60)
            ended_after = time.monotonic() - dropped_at
        finally:
            subprocess.run(["ip", "netns", "exec", n3.netns, "iptables", "-F"], check=True)
        assert code == CUT_OFF_EXIT, run.output()
        said = (run.run_dir / "out-2.log").read_text(errors="replace")
        assert "this host is cut off from the run; its rank ends" in said
        print(f"DROP to the cut-off rank's end: {ended_after:.1f} s (bound {CUT_OFF_S:g} s "
              f"after the store's last answer)")
        assert ended_after <= 60.0
        run.wait_for("the survivors step on", lambda: run.steps_done() > going_on + 1)
