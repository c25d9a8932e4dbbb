"""scripts/lowest.sh, what runs beside the tests at the lowest CPU priority: in an idle CPU group
where the machine allows one (every process it starts stays there, a new session too), in a
session whose autogroup is niced, and never touching its caller's session."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "lowest.sh"
# What a process started by the command reports: its CPU group, its session's autogroup, its nice.
REPORT = "grep ':cpu:' /proc/self/cgroup; cat /proc/self/autogroup 2>/dev/null; nice"


def lowest(*args: str, session: bool = False) -> str:
    command = ["bash", str(SCRIPT), *args]
    return subprocess.run(["setsid", "-w", *command] if session else command, check=True,
                          capture_output=True, text=True, timeout=30).stdout


@pytest.fixture
def group() -> Iterator[str]:
    made = lowest("make").strip()
    if not made:
        pytest.skip("no cgroup-v1 CPU group can be made here (not root, or no cpu controller)")
    yield made
    lowest("remove", made)
    assert not Path(made).exists()


def test_the_group_is_idle_and_what_the_command_starts_in_a_new_session_stays_in_it(
        group: str) -> None:
    assert Path(group, "cpu.idle").read_text().strip() == "1" or \
        Path(group, "cpu.shares").read_text().strip() == "2"
    report = lowest("run", group, "sh", "-c", f'setsid sh -c "{REPORT}"', session=True)
    assert f":cpu:/{Path(group).name}\n" in report
    assert report.splitlines()[-1] == "19"


def test_a_group_still_holding_a_process_is_removed_and_the_process_left_running(
        group: str) -> None:
    # A process that outlived its session's end: it leaves the group, which goes.
    started = lowest("run", group, "sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!",
                     session=True)
    pid = int(started)
    try:
        lowest("remove", group, "1")
        assert not Path(group).exists()
        assert Path(f"/proc/{pid}").exists()
    finally:
        os.kill(pid, 9)


def test_the_session_it_leads_gets_the_autogroup_nice_and_a_callers_session_never_does() -> None:
    if not Path("/proc/self/autogroup").exists():
        pytest.skip("the kernel groups no sessions (no autogroup)")
    mine = Path("/proc/self/autogroup").read_text()
    led = lowest("run", "", "sh", "-c", REPORT, session=True)
    assert "nice 19" in led and led.splitlines()[-1] == "19"
    called = lowest("run", "", "sh", "-c", REPORT)
    assert called.splitlines()[-1] == "19"  # the command's own nice, all the same
    assert Path("/proc/self/autogroup").read_text() == mine


def test_a_raised_group_has_the_normal_weight(group: str) -> None:
    lowest("raise", group)
    idle = Path(group, "cpu.idle")
    assert (not idle.exists() or idle.read_text().strip() == "0")
    assert Path(group, "cpu.shares").read_text().strip() == "1024"
