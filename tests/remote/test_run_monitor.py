"""How a run's end is decided from what the hosts report (no processes involved)."""

from __future__ import annotations

from profiles.user_errors import CorralError
from remote.api import LogLine, RankEvent
from remote.run.failures import Cause
from remote.run.lifecycle import Finding, StopCause
from remote.run.monitor import RunMonitor
from remote.run.restart_policy import restart_note, restart_refusal
from remote.run.stream import LauncherExit, RankOwned
from trainer.disk_full import DiskFull, exit_status
from trainer.events import EndEvent, StartEvent


def _start(host: str, rank: int) -> RankEvent:
    return RankEvent(host=host, event=StartEvent(
        t=1.0, rank=rank, world_size=2, local_rank=0, host="m", pid=1, device="cpu",
        device_name="cpu", backend="gloo", model="simple_cnn", dataset="synthetic_image",
        global_batch=8, split=(4, 4), policy="static", step=0, total_steps=10,
        steps_per_epoch=8, threads=1, slowdown=1.0))


def _end(host: str, rank: int, status: str, t: float = 5.0, error: str | None = None) -> RankEvent:
    return RankEvent(host=host, event=EndEvent(t=t, rank=rank, step=3, status=status,  # type: ignore[arg-type]
                                               error=error))


def _exit(host: str, status: str, t: float = 6.0) -> LauncherExit:
    return LauncherExit(t=t, host=host, status=status)


def _log(host: str, text: str, rank: int | None = None) -> LogLine:
    return LogLine(t=1.0, host=host, rank=rank, text=text)


def test_every_launcher_exiting_zero_completes_the_run() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    for item in (_start("a", 0), _start("b", 1), _end("a", 0, "completed"), _exit("a", "0")):
        monitor.observe(item)
    assert not monitor.finished
    monitor.observe(_end("b", 1, "completed"))
    monitor.observe(_exit("b", "0"))
    assert monitor.finished and monitor.finding().state == "completed"


def test_a_killed_rank_is_named_over_the_peer_that_failed_first() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    monitor.observe(_start("a", 0))
    monitor.observe(_start("b", 1))
    monitor.observe(_log("b", "step 3 loss 0.1", rank=1))
    # The peer's error is reported first: its connection to the killed rank broke.
    monitor.observe(_end("a", 0, "failed", t=2.0, error="Connection closed by peer"))
    for line in ("Root Cause (first observed failure):", "  rank      : 1 (local_rank: 0)",
                 "  exitcode  : -9 (pid: 42)"):
        monitor.observe(_log("b", line))
    monitor.observe(_exit("b", "1", t=3.0))
    monitor.observe(_exit("a", "1", t=4.0))
    final = monitor.finding()
    assert final.state == "failed"
    assert (final.failed_host, final.failed_rank) == ("b", 1)
    assert "signal 9" in final.detail and "step 3 loss 0.1" in final.detail


def test_the_earliest_failed_rank_is_the_cause() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    monitor.observe(_start("a", 0))
    monitor.observe(_start("b", 1))
    monitor.observe(_end("a", 0, "failed", t=7.0, error="peer gone"))
    monitor.observe(_end("b", 1, "failed", t=5.0, error="ValueError: bad batch"))
    monitor.observe(_exit("a", "1"))
    monitor.observe(_exit("b", "1"))
    final = monitor.finding()
    assert (final.failed_host, final.failed_rank) == ("b", 1)
    assert "ValueError: bad batch" in final.detail


def test_hosts_without_a_start_event_are_named_as_never_joined() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b", "c"))
    monitor.observe(_log("a", "torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError"))
    monitor.observe(_exit("a", "1"))
    monitor.observe(monitor.lost("b", ConnectionError("connection lost")))
    monitor.observe(_exit("c", "1"))
    final = monitor.finding()
    assert final.state == "failed" and final.failed_host == "b"  # the drop, over exits
    assert "never joined the rendezvous: a, b, c" in final.detail


def test_a_mesh_failure_after_the_rendezvous_names_the_failing_rank_not_absent_hosts() -> None:
    # Both launchers logged their rendezvous result, then rank 1 died setting up the Gloo
    # mesh, before any start event: every host joined, so none may be called absent.
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    monitor.observe(RankOwned(host="a", rank=0))
    monitor.observe(RankOwned(host="b", rank=1))
    monitor.observe(_log("b", "RuntimeError: Gloo connectFullMesh failed", rank=1))
    for line in ("  rank      : 1 (local_rank: 0)", "  exitcode  : 1 (pid: 7)"):
        monitor.observe(_log("b", line))
    monitor.observe(_exit("b", "1", t=3.0))
    monitor.observe(_exit("a", "1", t=4.0))
    final = monitor.finding()
    assert (final.state, final.failed_host, final.failed_rank) == ("failed", "b", 1)
    assert "never joined" not in final.detail
    assert "Gloo connectFullMesh failed" in final.detail


def test_only_hosts_without_a_rendezvous_result_are_named_as_never_joined() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b", "c"))
    monitor.observe(RankOwned(host="a", rank=0))  # joined, then failed before its start event
    monitor.observe(_start("b", 1))
    monitor.observe(_exit("c", "1", t=2.0))
    for host in ("a", "b"):
        monitor.observe(_exit(host, "1", t=3.0))
    final = monitor.finding()
    assert final.detail.split("\n")[0].endswith("hosts that never joined the rendezvous: c")


def test_a_stop_from_elsewhere_ends_the_run_as_stopped() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    monitor.observe(_start("a", 0))
    monitor.observe(_start("b", 1))
    # b's rank saw a's rank vanish before b's own TERM arrived.
    monitor.observe(_end("b", 1, "failed", error="Connection closed by peer"))
    monitor.observe(_exit("a", "stopped"))
    monitor.observe(_exit("b", "stopped"))
    assert monitor.finding().state == "stopped"


def test_the_cause_is_settled_only_when_no_running_host_may_still_report_a_death() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    monitor.observe(_start("a", 0))
    monitor.observe(_start("b", 1))
    monitor.observe(_end("a", 0, "failed", error="Connection closed by peer"))
    assert monitor.failing and not monitor.cause_settled()  # b's rank 1 has not ended
    for line in ("  rank      : 1 (local_rank: 0)", "  exitcode  : -9 (pid: 42)"):
        monitor.observe(_log("b", line))
    monitor.observe(_exit("b", "1"))
    assert monitor.cause_settled()
    assert monitor.first_failure() is not None and monitor.first_failure().rank == 1  # type: ignore[union-attr]


def test_a_dropped_host_is_the_cause_over_peers_that_then_failed() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    monitor.observe(_start("a", 0))
    monitor.observe(_start("b", 1))
    monitor.observe(monitor.lost("b", ConnectionError("connection lost")))
    assert monitor.cause_settled()
    monitor.observe(_end("a", 0, "failed", t=9e9, error="Connection closed by peer"))
    monitor.observe(_exit("a", "1"))
    final = monitor.finding()
    assert (final.failed_host, final.failed_rank) == ("b", None) and "lost" in final.detail


def test_a_launcher_that_met_a_full_disk_is_named_over_the_peer_it_broke() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"), run_dir="/runs/r")
    monitor.observe(_start("a", 0))
    monitor.observe(_start("b", 1))
    # b's rank loses its peer first and says so; a's launcher vanished on a full disk.
    monitor.observe(_end("b", 1, "failed", t=2.0, error="Connection closed by peer"))
    monitor.observe(_exit("b", "1", t=2.5))
    monitor.observe(_exit("a", "diskfull", t=3.0))
    final = monitor.finding()
    assert final.state == "failed" and final.failed_host == "a"
    assert "disk full on a at /runs/r" in final.detail


def test_a_failures_last_lines_leave_torchs_chatter_out() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a",))
    monitor.observe(_start("a", 0))
    monitor.observe(_log("a", "ValueError: bad batch", rank=0))
    for _ in range(20):  # more chatter than the lines kept to explain a failure
        monitor.observe(_log("a", "I1122 21:48:11.857000 27391 torch/distributed/elastic/agent/"
                                  "server/api.py:932] [default] worker group finished"))
    monitor.observe(_log("a", "  warnings.warn(", rank=0))
    monitor.observe(_end("a", 0, "failed", error="ValueError: bad batch"))
    monitor.observe(_exit("a", "1"))
    detail = monitor.finding().detail
    assert "[a rank 0] ValueError: bad batch" in detail
    assert "worker group finished" not in detail and "warnings.warn" not in detail


def test_a_launcher_losing_the_store_after_its_ranks_finished_does_not_fail_the_run() -> None:
    # TRL's sft.py on 3 hosts, once in 6: the master's agent exits first and another host's
    # agent fails to reach the store it hosted (RendezvousConnectionError), exit status 1.
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    for item in (_start("a", 0), _start("b", 1), _end("a", 0, "completed"),
                 _end("b", 1, "completed"), _exit("a", "0"),
                 _log("b", "torch.distributed.elastic.rendezvous.api.RendezvousConnectionError: "
                      "The connection to the C10d store has failed."), _exit("b", "1")):
        monitor.observe(item)
    final = monitor.finding()
    assert final.state == "completed", final
    assert "b's launcher ended with status 1 after its ranks finished" in final.detail


def test_a_rank_failing_after_its_completed_end_still_fails_the_run() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a",))
    for item in (_start("a", 0), _end("a", 0, "completed"),
                 _log("a", "  rank      : 0 (local_rank: 0)"),
                 _log("a", "  exitcode  : 1 (pid: 4)"),
                 _exit("a", "1")):
        monitor.observe(item)
    assert monitor.finding().state == "failed"


def test_a_run_whose_ranks_took_no_step_completed_having_trained_nothing() -> None:
    from console.follow import exit_code, status_line
    from console.model.run import RunModel
    from remote.api import RunStatus, trained_nothing

    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    for host, rank in (("a", 0), ("b", 1)):
        monitor.observe(_start(host, rank))
        for said in ("loading", f"Unable to locate sufficient 2 gpus on {host}. Exiting."):
            monitor.observe(_log(host, said, rank=rank))
        monitor.observe(RankEvent(host=host, event=EndEvent(t=5.0, rank=rank, step=0,
                                                            status="completed")))
        monitor.observe(_exit(host, "0"))
    final = monitor.finding()
    assert final.state == "completed" and trained_nothing(final.state, final.detail)
    assert final.detail.startswith("trained 0 steps")
    # the last lines each rank printed, named by host and rank
    assert "[a rank 0] Unable to locate sufficient 2 gpus on a. Exiting." in final.detail
    assert "[b rank 1] Unable to locate sufficient 2 gpus on b. Exiting." in final.detail
    status = RunStatus(t=6.0, run_id="r", state="completed", detail=final.detail)
    assert "[b rank 1] Unable" in status_line(status)  # what `corral run` prints
    model = RunModel.of_run("r")
    model.apply(status)
    assert exit_code(model) == 0  # the script's own status, as under torchrun
    assert "steps, samples and rates are unknown" in final.detail.splitlines()[0]


def test_a_run_that_stepped_is_not_trained_nothing() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a",))
    for item in (_start("a", 0), _end("a", 0, "completed"), _exit("a", "0")):
        monitor.observe(item)
    assert monitor.finding().detail == "1 rank(s) finished"


def test_a_restart_is_refused_for_what_the_failure_was_not_for_words_in_its_detail() -> None:
    """A diverged rank or a full disk ends the run (a restart would meet them again); a rank
    whose error text merely contains those words is restarted like any other failure."""
    def ended(*items: object) -> Finding:
        monitor = RunMonitor(run_id="r", hosts=("a", "b"), run_dir="/runs/r")
        for item in (_start("a", 0), _start("b", 1), *items):
            monitor.observe(item)  # type: ignore[arg-type]
        return monitor.finding()

    def refusal(final: Finding) -> str | None:
        return restart_refusal(final, 0, 3, wanted=True, stop_clean=True)

    diverged = ended(_end("a", 0, "diverged", t=2.0, error="loss is nan at step 3"),
                     _exit("a", "1"), _exit("b", "1"))
    assert diverged.cause is Cause.DIVERGED
    assert refusal(diverged) == ("not restarted: a diverged run would diverge again from the "
                                 "same checkpoint")
    full = ended(_exit("a", "diskfull", t=3.0), _exit("b", "1"))
    assert full.cause is Cause.DISK_FULL
    assert refusal(full) == "not restarted: the disk is still full"
    worded = ended(_end("a", 0, "failed", t=2.0,
                        error="ValueError: a diverged: ran out of disk: in the user's text"),
                   _exit("a", "1"), _exit("b", "1"))
    assert " diverged: " in worded.detail and " ran out of disk: " in worded.detail
    assert worded.cause is Cause.OTHER and refusal(worded) is None


def test_a_killed_launcher_blames_its_own_host_not_the_peer_it_broke() -> None:
    # Issue 59 item 4: the peer's rank dies first (its connection to the killed host's ranks
    # closed) and its launcher names it; the host whose launcher (or container) was killed
    # is the cause all the same, in the restart line too.
    for status, how in (("gone", "vanished without an exit status"),
                        ("137", "was killed (SIGKILL, status 137)")):
        monitor = RunMonitor(run_id="r", hosts=("a", "b"))
        monitor.observe(_start("a", 0))
        monitor.observe(_start("b", 1))
        for line in ("Root Cause (first observed failure):", "  rank      : 0 (local_rank: 0)",
                     "  exitcode  : 1 (pid: 42)"):
            monitor.observe(_log("a", line))
        monitor.observe(_exit("a", "1", t=2.0))
        monitor.observe(_exit("b", status, t=3.0))
        assert monitor.cause_settled()
        final = monitor.finding()
        assert (final.failed_host, final.failed_rank) == ("b", None), final
        assert final.detail.startswith(f"b launcher {how}")
        note = restart_note(final, 1, 2)
        assert note.startswith(f"restart 1 of 2 after: b launcher {how}")


def test_a_launcher_killed_by_a_stop_is_no_cause() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a",))
    monitor.observe(_start("a", 0))
    monitor.stop.request(StopCause.REQUESTED)
    monitor.observe(_exit("a", "gone"))
    assert monitor.finding().state == "stopped"


def test_a_rank_that_ended_on_a_full_disk_is_named_by_its_exit_status_alone() -> None:
    # Its words and its end event went to the full disk (the chaos run, seed 81: "n1 rank 0
    # exited with status 1 without finishing"); torchrun's summary came once there was room.
    code = exit_status(DiskFull("/runs/r/metrics", "the step event of rank 0 could not be "
                                "written", host="a"))
    monitor = RunMonitor(run_id="r", hosts=("a", "b"), run_dir="/runs/r")
    monitor.observe(_start("a", 0))
    monitor.observe(_start("b", 1))
    monitor.observe(_end("b", 1, "failed", t=2.0, error="Connection closed by peer"))
    for line in ("  rank      : 0 (local_rank: 0)", f"  exitcode  : {code} (pid: 42)"):
        monitor.observe(_log("a", line))
    monitor.observe(_exit("a", "1", t=3.0))
    monitor.observe(_exit("b", "1", t=3.5))
    final = monitor.finding()
    assert (final.state, final.failed_host, final.failed_rank) == ("failed", "a", 0)
    assert "disk full on a at /runs/r; free space there and resume the run" in final.detail
    assert exit_status(CorralError("not a full disk")) == 1  # any other keeps its own


def test_a_rank_ended_by_a_full_disk_is_named_when_torchruns_summary_was_lost() -> None:
    # The chaos run: rank 0 met the full disk; its launcher's summary at exit did not fit
    # there, the line torchrun wrote as the rank ended did, and the peers' broken pipes came
    # first ("n3 rank 2 failed: DistNetworkError: Broken pipe" was blamed).
    monitor = RunMonitor(run_id="r", hosts=("a", "b"), run_dir="/runs/r")
    monitor.observe(_start("a", 0))
    monitor.observe(_start("b", 1))
    monitor.observe(_end("b", 1, "failed", t=2.0, error="DistNetworkError: Broken pipe"))
    monitor.observe(_log("a", "E1129 17:00:04.773000 24613 torch/distributed/elastic/"
                              "multiprocessing/api.py:1002] failed (exitcode: 28) local_rank: 0 "
                              "(pid: 25155) of binary: /usr/bin/python"))
    monitor.observe(_exit("a", "1", t=3.0))
    monitor.observe(_exit("b", "1", t=3.5))
    final = monitor.finding()
    assert (final.failed_host, final.failed_rank) == ("a", 0)
    assert "a rank 0 ran out of disk: disk full on a at /runs/r" in final.detail
