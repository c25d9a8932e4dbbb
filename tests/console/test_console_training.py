"""The console shows each rank's precision, and the latest evaluation with its trend."""

from __future__ import annotations

from dataclasses import replace

from console.model.run import RunModel
from console.widgets.header import progress_line
from remote.api import RankEvent
from trainer.events import EvalEvent, StartEvent


def start(rank: int, host: str, precision: str) -> RankEvent:
    return RankEvent(host=host, event=StartEvent(
        t=10.0, rank=rank, world_size=2, local_rank=0, host=host, pid=1, device="cpu",
        device_name="Xeon", backend="gloo", model="m", dataset="d", global_batch=64,
        split=(32, 32), policy="static", step=0, total_steps=100, steps_per_epoch=50,
        threads=1, slowdown=1.0, precision=precision))


def test_each_rank_row_names_a_reduced_precision() -> None:
    m = RunModel(cluster_name="lab", hosts=("a", "b"), policy="static")
    m.reset_run("r1")
    m.apply(start(0, "a", "bf16"))
    m.apply(start(1, "b", "fp32"))
    assert [m.ranks[r].device for r in (0, 1)] == ["bf16 CPU", "CPU"]


def test_the_header_shows_the_latest_eval_and_its_trend() -> None:
    m = RunModel(cluster_name="lab", hosts=("a",), policy="static", total_steps=100)
    m.reset_run("r1")
    assert "eval" not in progress_line(m, 20.0, 160).plain
    first = EvalEvent(t=11.0, rank=0, step=10, samples=200, units=200, loss=1.5, accuracy=0.4)
    m.apply(RankEvent(host="a", event=first))
    assert "eval 1.5 acc 40.0%" in progress_line(m, 20.0, 160).plain
    m.apply(RankEvent(host="a", event=replace(first, step=20, loss=0.9, accuracy=0.7)))
    assert "eval 0.9↓ acc 70.0%↑" in progress_line(m, 20.0, 160).plain
    lm = replace(first, step=30, loss=2.0, accuracy=None, perplexity=7.389)
    m.apply(RankEvent(host="a", event=replace(lm, step=30)))
    m.apply(RankEvent(host="a", event=replace(lm, step=40, loss=2.2, perplexity=9.025)))
    assert "eval 2.2↑ ppl 9.025↑" in progress_line(m, 20.0, 160).plain


def test_the_loss_panel_draws_the_eval_curve_on_the_training_steps() -> None:
    from console.widgets.loss import loss_lines, title_line
    from trainer.events import StepEvent

    m = RunModel(cluster_name="lab", hosts=("a",), policy="static", total_steps=100)
    m.reset_run("r1")
    m.apply(start(0, "a", "fp32"))
    for step in range(1, 21):
        m.apply(RankEvent(host="a", event=StepEvent(
            t=10.0 + step, rank=0, step=step, epoch=0, local_batch=64, loss=2.0 / step,
            compute_s=0.1, step_s=0.1, samples_per_s=640.0, global_loss=2.0 / step)))
        if step % 10 == 0:
            m.apply(RankEvent(host="a", event=EvalEvent(
                t=10.5 + step, rank=0, step=step, samples=200, units=200, loss=3.0 / step,
                accuracy=step / 40)))
    lines, steps = loss_lines(m)
    by_name = {line.label: line.values for line in lines}
    assert steps == list(range(1, 21))
    assert by_name["loss"][-1] == 0.1
    # The held-out points sit on the steps they were taken at, nowhere else.
    assert [v for v in by_name["eval loss"] if v is not None] == [0.3, 0.15]
    assert by_name["eval loss"][9] == 0.3 and by_name["eval accuracy"][19] == 0.5
    assert set(by_name) == {"loss", "eval loss", "eval accuracy"}  # samples/units: no curve
    assert "eval loss" in title_line(m).plain
