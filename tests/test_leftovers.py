"""scripts/leftovers.sh, what a test phase left running: every process started in the tests' CPU
group, in whatever session, is listed and ended by the sweep after the phase, except the one it
is told to keep; a group with nothing left says nothing."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "leftovers.sh"


def leftovers(*args: str) -> str:
    return subprocess.run(["bash", str(SCRIPT), *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


@pytest.fixture
def group() -> Iterator[str]:
    made = leftovers("make").strip()
    if not made:
        pytest.skip("no cgroup-v1 CPU group can be made here (not root, or no cpu controller)")
    yield made
    leftovers("remove", made)
    assert not Path(made).exists()


def test_a_process_left_in_its_own_session_is_listed_and_ended_and_the_kept_one_spared(
        group: str) -> None:
    kept = subprocess.Popen(["sleep", "300"])
    left = subprocess.Popen(["setsid", "sleep", "301"])
    try:
        for pid in (kept.pid, left.pid):
            leftovers("join", group, str(pid))
        said = leftovers("sweep", group, str(kept.pid), "the parallel phase", "1")
        assert "processes the parallel phase left behind" in said and "sleep 301" in said
        assert "sleep 300" not in said
        assert left.wait(timeout=30) == -signal.SIGKILL and kept.poll() is None
    finally:
        kept.kill()
        left.kill()
        kept.wait()
        left.wait()


def test_a_group_with_nothing_left_says_nothing(group: str) -> None:
    assert leftovers("sweep", group, "1", "the serial phase") == ""
