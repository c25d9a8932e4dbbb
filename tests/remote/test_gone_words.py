"""The word "gone" alone says nothing: a rank's process or a host's launcher that vanished is
said as what happened to it (no processes involved)."""

from __future__ import annotations

from remote.api import HostStatus
from remote.run.hang import describe
from remote.run.monitor import RunMonitor

try:
    from test_run_monitor import _exit, _start
except ImportError:  # collected as a package
    from tests.remote.test_run_monitor import _exit, _start  # type: ignore[no-redef]


def test_a_silent_rank_whose_process_is_gone_is_said_to_have_exited_or_been_killed() -> None:
    line = describe({0: "S", 1: "gone"}, {0: ("h0", 10), 1: ("h1", 11)})
    assert line == ("rank 0 on h0 is waiting; rank 1 on h1 is no longer running (it exited "
                    "or was killed)")


def test_a_launcher_gone_without_an_exit_status_is_said_to_have_vanished() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    monitor.observe(_start("a", 0))
    [status] = monitor.observe(_exit("a", "gone"))
    assert isinstance(status, HostStatus) and status.state == "failed"
    assert status.detail == ("launcher vanished without an exit status (killed with its "
                             "process group)")
