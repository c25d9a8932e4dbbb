"""A host that left the run live is no failure of it (issue 61): its ranks' failed ends, its
launcher's exit and its tail's loss are forgotten once the survivors' ``membership`` event is
heard, and the run still completes on the others; with the hot path open the follower waits
for that event instead of calling the run failed (no processes: the monitor and the facts the
follower reports, whose deadlines the loop keeps: tests/remote/test_decide.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.events import RunOutcome
from remote.records.runs import RunInfo
from remote.run.failures import HostLost
from remote.run.follow_facts import FailureGone, FailureSeen, Tick
from remote.run.follower import RunFollower
from remote.run.lifecycle import StopRequest
from remote.run.monitor import RunMonitor

try:
    from test_run_monitor import _end, _exit, _start
except ImportError:  # collected as a package
    from tests.remote.test_run_monitor import _end, _exit, _start  # type: ignore[no-redef]


def test_a_host_that_left_is_no_failure_and_the_run_completes_on_the_others() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    for item in (_start("a", 0), _start("b", 1), _end("b", 1, "failed", error="peer gone")):
        monitor.observe(item)
    assert monitor.failing  # before the survivors said so, b's end is a failure
    monitor.members_changed(left=frozenset({"b"}), joined=frozenset())
    assert not monitor.failing
    assert monitor.observe(_exit("b", "1")) == []  # its launcher's end: said nothing more
    assert monitor.observe(HostLost(host="b", reason="quiet", t=7.0)) == []
    assert not monitor.failing and not monitor.finished
    for item in (_end("a", 0, "completed"), _exit("a", "0")):
        monitor.observe(item)
    assert monitor.finished and monitor.all_completed
    assert monitor.finding().outcome is RunOutcome.COMPLETED


def test_a_host_that_left_and_joined_again_is_waited_for() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    monitor.members_changed(left=frozenset({"b"}), joined=frozenset())
    monitor.members_changed(left=frozenset(), joined=frozenset({"b", "c"}))
    assert monitor.hosts == ("a", "b", "c") and not monitor.left
    monitor.observe(_exit("a", "0"))
    assert not monitor.finished


def _follower(tmp_path: Path, *, on_host_loss: str, port: int) -> RunFollower:
    hosts = tuple(HostSection(name=n, address="local", python="python3") for n in ("a", "b"))
    config = ClusterConfig(path=tmp_path / "cluster.toml",
                           cluster=ClusterSection(name="m", master="a",
                                                  run_root=str(tmp_path / "runs")),
                           hosts=hosts, run=RunSection(on_host_loss=on_host_loss))  # type: ignore[arg-type]
    info = RunInfo(run_id="m-1", cluster="m", state="running", started=1.0, hosts=("a", "b"),
                   membership_port=port)
    return RunFollower(config, None, info, launching=True, stop=StopRequest())  # type: ignore[arg-type]


@pytest.mark.parametrize(("on_host_loss", "port", "failed", "hot"), [
    ("continue", 31000, "b", True),  # the survivors take b out themselves
    ("continue", 31000, "a", False),  # the master's host: the restart path
    ("continue", 0, "b", False),  # no membership port (a script run)
    ("stop", 31000, "b", False),
])
def test_the_follower_reports_a_failure_with_whether_the_hot_path_is_open(
        tmp_path: Path, on_host_loss: str, port: int, failed: str, hot: bool) -> None:
    """It reports, the loop waits (``HOT_PATH_WAIT_S`` for a hot one: test_decide.py)."""
    follower = _follower(tmp_path, on_host_loss=on_host_loss, port=port)
    rank = 0 if failed == "a" else 1
    follower.monitor.observe(_start(failed, rank))
    follower.monitor.observe(_end(failed, rank, "failed", error="killed"))
    facts = follower.facts(None)
    seen = [f for f in facts if isinstance(f, FailureSeen)]
    assert [(f.host, f.hot_path) for f in seen] == [(failed, hot)]
    assert isinstance(facts[-1], Tick) and facts[-1].t == seen[0].t
    assert not [f for f in follower.facts(None) if isinstance(f, FailureSeen)]  # said once
    follower.members_changed(frozenset({failed}), frozenset())
    assert [type(f) for f in follower.facts(None)] == [FailureGone, Tick]


def test_a_join_record_is_heard_once_and_a_joiners_end_before_it_is_let_in_is_no_failure(
        tmp_path: Path) -> None:
    from types import SimpleNamespace

    from remote.run.follower import _Tick
    from remote.run.join import JoinRecord, write_join_record
    from remote.run.lifecycle import JoinEnded, JoinLaunched

    follower = _follower(tmp_path, on_host_loss="continue", port=31000)
    follower.pool = SimpleNamespace(config=follower.config)  # type: ignore[assignment]
    # cluster.toml got host c while the run trains: its section comes with the record
    (tmp_path / "cluster.toml").write_text("".join(
        f'[[hosts]]\nname = "{n}"\naddress = "local"\npython = "python3"\n\n' for n in "abc")
        + '[cluster]\nname = "m"\nmaster = "a"\n', encoding="utf-8")
    write_join_record(follower.local_dir, JoinRecord(host="c", pgid=7, asked=1.0))
    [launched] = follower._joins(_Tick())
    assert isinstance(launched, JoinLaunched) and (launched.host, launched.pgid) == ("c", 7)
    assert launched.section is not None and launched.section.name == "c"
    assert follower._joins(_Tick()) == []  # heard once
    # followed as a joiner (``add_joiner``): its launcher's end is a failed join, not the run's
    follower.joining.add("c")
    follower.monitor.members_changed(frozenset({"c"}), frozenset())
    [ended] = follower._joins(_exit("c", "1"))
    assert ended == JoinEnded(host="c", detail="its launcher ended with status 1")
    assert follower.monitor.observe(_exit("c", "1")) == [] and not follower.monitor.failing
    assert follower._joins(_exit("c", "1")) == []  # said once


def test_a_host_that_left_and_joins_again_is_copied_here_again(tmp_path: Path) -> None:
    """Its second launch's lines and events reach this machine's copy (on the old code the
    first copy, still open, kept the copy's lock: the joiner's ranks were shown, never kept,
    and `corral report` and `corral logs` lacked them)."""
    from types import SimpleNamespace

    from remote.records.collected import CollectedCopy

    follower = _follower(tmp_path, on_host_loss="continue", port=31000)
    follower.copies = {h: CollectedCopy(follower.local_dir, h) for h in ("a", "b")}
    follower.copies["b"].append("metrics/rank-1.jsonl", '{"event": "x"}', 15)
    added: list[str] = []
    follower.tails = SimpleNamespace(add=lambda host, tail: added.append(host))  # type: ignore[assignment]
    follower.members_changed(frozenset({"b"}), frozenset())  # b left live
    follower.add_joiner("b", None)  # type: ignore[arg-type]
    copy = follower.copies["b"]
    assert added == ["b"] and copy.writer
    assert copy.offsets == {"metrics/rank-1.jsonl": 15}  # it goes on where the first one was
    copy.append("metrics/rank-3.jsonl", '{"event": "y"}', 15)
    copy.save()
    assert (copy.root / "metrics" / "rank-3.jsonl").read_text() == '{"event": "y"}\n'
    copy.close()
