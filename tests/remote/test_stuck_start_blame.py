"""A start that never reaches a first step names the rank that held the others up, whatever
order the stuck ranks' exits reach the follower in: a rank that waited in a collective exits
with its own status (``WAITING_STATUS``) after a line naming the ranks it waited for, and ranks
below them; a rank whose main thread holds the GIL never exits by itself, and is still the one
named (no processes involved; the real run is ``test_script_ranks_local``'s)."""

from __future__ import annotations

from remote.run.lifecycle import StopCause
from remote.run.monitor import RunMonitor
from trainer.launch_contract import HELD_UP_BY, STUCK_STATUS, WAITING_STATUS

try:
    from test_run_monitor import _exit, _log, _start
except ImportError:  # collected as a package
    from tests.remote.test_run_monitor import _exit, _log, _start  # type: ignore[no-redef]

SUMMARY = ("StuckRankError: no first step within 20 s of the start: rank 1 is in "
           "sleepy.py:9 in <module>; ranks 0, 2 wait for it in broadcast (utils.py)")


def _stuck(monitor: RunMonitor, host: str, rank: int, status: int, t: float,
           lines: tuple[str, ...]) -> None:
    """``host``'s one rank prints ``lines`` and exits with ``status``; its launcher fails."""
    for line in lines:
        monitor.observe(_log(host, line, rank=rank))
    for line in (f"  rank      : {rank} (local_rank: 0)", f"  exitcode  : {status} (pid: 7)"):
        monitor.observe(_log(host, line))
    monitor.observe(_exit(host, "1", t=t))


def _three_hosts() -> RunMonitor:
    monitor = RunMonitor(run_id="r", hosts=("h0", "h1", "h2"))
    for rank, host in enumerate(("h0", "h1", "h2")):
        monitor.observe(_start(host, rank))
    return monitor


def test_the_holding_rank_is_named_though_a_waiting_rank_exits_first() -> None:
    monitor = _three_hosts()
    waited = (SUMMARY, f"{HELD_UP_BY}1")
    _stuck(monitor, "h0", 0, WAITING_STATUS, 3.0, waited)
    first = monitor.first_failure()  # named from the first exit already
    assert first is not None and (first.host, first.rank) == ("h1", 1), first
    _stuck(monitor, "h2", 2, WAITING_STATUS, 3.5, waited)
    _stuck(monitor, "h1", 1, STUCK_STATUS, 4.0, ("  File \"sleepy.py\", line 9", SUMMARY))
    final = monitor.finding()
    assert (final.failed_host, final.failed_rank) == ("h1", 1), final
    assert SUMMARY in final.detail.splitlines()[0], final.detail
    assert '[h1 rank 1]   File "sleepy.py", line 9' in final.detail, final.detail


def test_a_rank_holding_the_gil_is_named_though_it_never_exits() -> None:
    """Its watch thread cannot run: the others name it as silent, and faulthandler's dump
    (its stack, from outside the interpreter) is in its log when the run ends."""
    monitor = _three_hosts()
    monitor.observe(_log("h1", "Thread 0x00007f (most recent call first):", rank=1))
    monitor.observe(_log("h1", '  File "gil.py", line 11 in <module>', rank=1))
    said = ("StuckRankError: no first step within 20 s of the start: rank 1 gave no position "
            "in 5 s (its main thread holds the GIL or it is frozen: its stack follows in its "
            "log); ranks 0, 2 wait for it in broadcast (utils.py)", f"[rank0]:{HELD_UP_BY}1")
    _stuck(monitor, "h0", 0, WAITING_STATUS, 3.0, said)
    assert monitor.cause_settled()  # the holder is known: the hosts left can be stopped
    _stuck(monitor, "h2", 2, WAITING_STATUS, 3.5, said)
    monitor.stop.request(StopCause.FAILURE)  # the follower stops the host that still runs
    monitor.observe(_exit("h1", "stopped", t=9.0))
    final = monitor.finding()
    assert (final.failed_host, final.failed_rank) == ("h1", 1), final
    first = final.detail.splitlines()[0]
    assert first.startswith("h1 rank 1 held up every other rank's start: StuckRankError"), first
    assert "rank 1 gave no position" in first, first
    assert '[h1 rank 1]   File "gil.py", line 11 in <module>' in final.detail, final.detail


def test_ranks_waiting_for_each_other_name_the_earliest() -> None:
    monitor = _three_hosts()
    said = ("StuckRankError: no first step within 20 s of the start: ranks 0, 1, 2 wait for "
            "each other in broadcast (utils.py)",)
    _stuck(monitor, "h2", 2, WAITING_STATUS, 3.0, said)
    _stuck(monitor, "h0", 0, WAITING_STATUS, 3.5, said)
    _stuck(monitor, "h1", 1, WAITING_STATUS, 4.0, said)
    final = monitor.finding()
    assert (final.failed_host, final.failed_rank) == ("h2", 2), final
    assert f"exited with status {WAITING_STATUS}" in final.detail.splitlines()[0]


def test_a_scripts_own_exit_with_that_status_is_not_taken_for_waiting() -> None:
    monitor = RunMonitor(run_id="r", hosts=("h0", "h1"))
    for rank, host in enumerate(("h0", "h1")):
        monitor.observe(_start(host, rank))
    _stuck(monitor, "h1", 1, WAITING_STATUS, 2.0, ("ValueError: bad shard",))
    _stuck(monitor, "h0", 0, 1, 3.0, ("RuntimeError: Connection closed by peer",))
    final = monitor.finding()  # both died by themselves: the earlier is named
    assert (final.failed_host, final.failed_rank) == ("h1", 1), final
    assert "ValueError: bad shard" in final.detail.splitlines()[0], final.detail
