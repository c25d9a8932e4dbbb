"""The console's run model: the numbers every panel shows, without Textual."""

from __future__ import annotations

import pytest

from console.model.run import RunModel
from remote.api import CheckItem, CheckReport, HostStatus, LogLine, RankEvent, RunStatus
from tests.fake_runs import FakeHost, events_only, scripted_run
from trainer.events import (
    MEASURE_AFTER_STEPS,
    CapacityEvent,
    EndEvent,
    RebalanceEvent,
    ResourceEvent,
    StartEvent,
    StepEvent,
)


def model(hosts: tuple[str, ...] = ("alpha", "beta", "gamma")) -> RunModel:
    return RunModel(cluster_name="lab", hosts=hosts, policy="dynamic", total_steps=20,
                    global_batch=60)


def played(**options: object) -> RunModel:
    m = model()
    m.reset_run("r1")
    m.apply_all(events_only(scripted_run("r1", **options)))  # type: ignore[arg-type]
    return m


def start(rank: int, host: str, *, split: tuple[int, ...] = (30, 30), device: str = "cpu",
          name: str = "Xeon", t: float = 10.0) -> RankEvent:
    return RankEvent(host=host, event=StartEvent(
        t=t, rank=rank, world_size=len(split), local_rank=0, host=host, pid=1, device=device,
        device_name=name, backend="gloo", model="m", dataset="d", global_batch=sum(split),
        split=split, policy="dynamic", step=0, total_steps=100, steps_per_epoch=50,
        threads=1, slowdown=1.0))


def step(rank: int, host: str, n: int, *, batch: int, compute: float, step_s: float,
         t: float | None = None) -> RankEvent:
    return RankEvent(host=host, event=StepEvent(
        t=t if t is not None else 10.0 + n, rank=rank, step=n, epoch=0, local_batch=batch,
        loss=1.0 / n, compute_s=compute, step_s=step_s, samples_per_s=batch / step_s,
        global_loss=0.5 / n if rank == 0 else None,
        cluster_samples_per_s=60 / step_s if rank == 0 else None))


def test_before_any_run_every_host_is_an_idle_row() -> None:
    rows = model().rank_and_host_rows()
    assert [(r.host, r.rank_row, r.status) for r in rows] == [
        ("alpha", None, "idle"), ("beta", None, "idle"), ("gamma", None, "idle")]


def test_host_status_drives_placeholder_rows_before_ranks_exist() -> None:
    m = model()
    m.reset_run("r1")
    m.apply(HostStatus(t=1.0, host="alpha", state="pushing"))
    m.apply(HostStatus(t=1.0, host="beta", state="unreachable", detail="timed out"))
    rows = {r.host: r for r in m.rank_and_host_rows()}
    assert rows["alpha"].status == "pushing"
    assert (rows["beta"].status, rows["beta"].stale, rows["beta"].reason) == (
        "failed", True, "timed out")


def test_rank_row_shows_device_batch_rate_compute_share_and_resources() -> None:
    m = model(("alpha", "beta"))
    m.apply(start(0, "alpha", device="cuda:0", name="RTX 4090"))
    m.apply(step(0, "alpha", 1, batch=30, compute=0.15, step_s=0.2))
    m.apply(RankEvent(host="alpha", event=ResourceEvent(
        t=11.0, rank=0, gpu_util=87.0, gpu_mem_used=2**30, gpu_mem_total=2**34)))
    view = m.rank_and_host_rows()[0]
    assert view.rank_row is not None
    row = view.rank_row
    assert (row.device, row.backend, row.local_batch) == ("RTX 4090", "gloo", 30)
    assert row.samples_per_s == pytest.approx(150.0)
    assert row.compute_share == pytest.approx(0.75)
    assert (row.gpu_util, row.gpu_mem_used) == (87.0, 2**30)
    assert view.status == "running"


def test_cluster_throughput_ideal_and_efficiency() -> None:
    m = model(("alpha", "beta"))
    m.apply(RankEvent(host="alpha", event=CapacityEvent(
        t=10.0, rank=0, source="profile", samples_per_s=(200.0, 100.0), max_batch=(None, None))))
    assert m.ideal_samples_per_s == pytest.approx(300.0)
    m.apply(start(0, "alpha"))
    m.apply(start(1, "beta"))
    # Measured solo capacity (local_batch / compute_s) replaces the estimate once known.
    m.apply(step(1, "beta", 1, batch=30, compute=0.3, step_s=0.3))
    m.apply(step(0, "alpha", 1, batch=30, compute=0.1, step_s=0.3))
    assert m.ideal_samples_per_s == pytest.approx(300.0 + 100.0)
    assert m.samples_per_s == pytest.approx(200.0)
    assert m.efficiency == pytest.approx(0.5)
    assert m.history[-1].ideal == pytest.approx(400.0)


def test_slow_rank_is_a_straggler_and_the_fast_one_waits() -> None:
    m = model(("alpha", "beta", "gamma"))
    for rank, host in enumerate(("alpha", "beta", "gamma")):
        m.apply(start(rank, host, split=(20, 20, 20)))
    m.apply(step(0, "alpha", 1, batch=20, compute=0.1, step_s=0.4))
    m.apply(step(1, "beta", 1, batch=20, compute=0.1, step_s=0.4))
    m.apply(step(2, "gamma", 1, batch=20, compute=0.38, step_s=0.4))
    statuses = [r.status for r in m.rank_and_host_rows()]
    assert statuses == ["running", "running", "straggler"]
    assert m.ranks[0].compute_share == pytest.approx(0.25)


def test_rebalance_logs_decision_and_measures_gain_a_few_steps_later() -> None:
    m = model(("alpha", "beta"))
    m.apply(start(0, "alpha"))
    m.apply(start(1, "beta"))
    m.apply(RankEvent(host="alpha", event=RebalanceEvent(
        t=11.0, rank=0, step=5, previous=(30, 30), split=(40, 20), reason="beta is slower",
        predicted_gain=0.25, times=(0.2, 0.4), policy="dynamic")))
    assert m.split == (40, 20)
    decision = m.decisions[-1]
    assert (decision.step, decision.previous, decision.split) == (5, [30, 30], [40, 20])
    for n in range(5, 5 + MEASURE_AFTER_STEPS):
        m.apply(step(1, "beta", n, batch=20, compute=0.3, step_s=0.32))
        assert m.decisions[-1].measured_gain is None  # rank 0 has not reported step n yet
        m.apply(step(0, "alpha", n, batch=40, compute=0.28, step_s=0.32))
    # Measured once every rank ran every step of the window (the report's definition): the
    # slowest rank's compute time went from 0.4 s to 0.3 s, 25 % less.
    assert m.decisions[-1].measured_gain == pytest.approx(0.25)


def test_progress_eta_loss_and_elapsed_come_from_event_times() -> None:
    m = model(("alpha",))
    m.reset_run("r1")
    m.apply(RunStatus(t=100.0, run_id="r1", state="running"))
    m.apply(start(0, "alpha", split=(60,), t=100.0))
    for n in range(1, 11):
        m.apply(step(0, "alpha", n, batch=60, compute=0.4, step_s=0.5, t=100.0 + 0.5 * n))
    assert m.step == 10
    assert m.progress == pytest.approx(0.1)
    assert m.eta_s == pytest.approx(90 * 0.5)
    assert m.loss == pytest.approx(0.05)
    assert m.elapsed_s(now=160.0) == pytest.approx(60.0)


def test_failed_rank_keeps_last_values_greyed_with_the_reason() -> None:
    m = played(fail=(2, 8), rebalance_at=6)
    assert m.state == "failed"
    assert (m.failed_host, m.failed_rank) == ("gamma", 2)
    view = next(r for r in m.rank_and_host_rows()
                if r.rank_row is not None and r.rank_row.rank == 2)
    assert view.status == "failed" and view.stale
    assert "RuntimeError: boom" in view.reason
    assert view.rank_row is not None and view.rank_row.step == 7 and view.rank_row.samples_per_s
    assert not m.live


def test_unreachable_host_greys_out_its_ranks() -> None:
    m = played(hold_at=5)
    m.apply(HostStatus(t=2e6, host="beta", state="unreachable", detail="connection lost"))
    beta = next(r for r in m.rank_and_host_rows() if r.host == "beta")
    assert (beta.status, beta.stale, beta.reason) == ("failed", True, "connection lost")
    assert beta.rank_row is not None and beta.rank_row.local_batch is not None


def test_completed_run_marks_every_rank_done() -> None:
    m = played()
    assert m.state == "completed" and not m.live
    assert {r.status for r in m.rank_and_host_rows()} == {"done"}
    assert m.step == 20 and m.checkpoint and m.checkpoint.endswith("step-20.pt")


def test_logs_are_prefixed_host_rank_or_launcher() -> None:
    m = model()
    m.apply(LogLine(t=1.0, host="beta", rank=1, text="hello"))
    m.apply(LogLine(t=1.0, host="beta", rank=None, text="torchrun up"))
    lines = [e.line for e in m.logs]
    assert lines[-2:] == ["beta:1 hello", "beta:launcher torchrun up"]
    assert m.logs_total == 2


def test_failed_check_report_is_kept_for_the_console() -> None:
    m = model()
    m.reset_run("r1")
    report = CheckReport(items=(CheckItem(host="beta", name="torch", ok=False, detail="none",
                                          hint="pip install torch on beta"),))
    m.apply(RunStatus(t=1.0, run_id="r1", state="failed", detail="check failed",
                      report=report))
    assert m.check_report is report and m.state == "failed"


def test_end_event_of_a_single_rank_marks_only_that_rank() -> None:
    m = model(("alpha", "beta"))
    m.apply(start(0, "alpha"))
    m.apply(start(1, "beta"))
    m.apply(RankEvent(host="beta", event=EndEvent(t=1.0, rank=1, step=3, status="completed")))
    assert [r.status for r in m.rank_and_host_rows()] == ["starting", "done"]


def test_scripted_runs_with_several_ranks_per_host() -> None:
    hosts = (FakeHost(name="big", nproc=2), FakeHost(name="small", slowdown=3.0))
    m = model(("big", "small"))
    m.reset_run("r1")
    m.apply_all(events_only(scripted_run("r1", hosts=hosts)))
    assert [(r.host, r.rank_row.rank if r.rank_row else None) for r in m.rank_and_host_rows()] == [
        ("big", 0), ("big", 1), ("small", 2)]
    assert sum(m.split) == 60


def test_a_seat_opened_late_counts_the_elapsed_time_from_the_records_first_line() -> None:
    m = model(("alpha",))
    m.reset_run("r1", t=500.0)
    m.apply(start(0, "alpha", split=(60,), t=100.0))  # the record, replayed
    m.apply(step(0, "alpha", 1, batch=60, compute=0.4, step_s=0.5, t=101.0))
    m.apply(RunStatus(t=500.0, run_id="r1", state="running"))  # the seat opens now
    assert m.elapsed_s(now=560.0) == pytest.approx(460.0)
