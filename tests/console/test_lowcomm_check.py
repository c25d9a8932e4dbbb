"""`corral check`'s modes rows (exact / local / sit out) for an approximate local run."""

from __future__ import annotations

from rich.console import Console

from console.tables import check_table
from remote.events import CheckItem, CheckReport


def test_the_check_table_shows_each_hosts_modes() -> None:
    line = "`laptop`: exact: sits out, cluster 490 samples/s · local (approximate): trains"
    report = CheckReport(items=(CheckItem(host="laptop", name="ssh", ok=True, detail="ok"),),
                         modes=(("laptop", line),))
    console = Console(width=200, record=True)
    console.print(check_table(report))
    text = console.export_text()
    assert "modes" in text and "local (approximate): trains" in text


def test_the_report_counts_a_rounds_samples_and_labels_the_run_approximate() -> None:
    from types import SimpleNamespace
    from typing import cast

    from console.report import _exchange
    from figures.reducer import RunFigures
    from remote.records.summary import RoundFacts, RunSummary
    from trainer.events import RoundEvent, StartEvent, StepEvent

    figures = RunFigures()
    for rank in (0, 1):
        figures.observe(StartEvent(
            t=0.0, rank=rank, world_size=2, local_rank=0, host="h", pid=1, device="cpu",
            device_name="cpu", backend="gloo", model="simple_cnn", dataset="synthetic_image",
            global_batch=32, split=(16, 16), policy="static", step=0, total_steps=24,
            steps_per_epoch=16, threads=1, slowdown=1.0, exact=False, exchange="local"))
    # One round of 8 + 4 inner steps of 32 samples in 2 s: 192 samples/s, not 32 / 2.
    for rank, steps in ((0, 8), (1, 4)):
        figures.observe(StepEvent(t=2.0, rank=rank, step=12, epoch=0, local_batch=32 * steps,
                                  loss=2.0, compute_s=1.9, step_s=2.0))
    figures.observe(RoundEvent(t=2.0, rank=0, step=12, first_step=1, inner_steps=(8, 4),
                               islands=((0,), (1,)), round_s=2.0, exchange_s=0.1,
                               exchanged_bytes=38400, bytes_per_sample=100.0, round_steps=6))
    assert figures.mean_samples_per_s == 192.0
    assert figures.last_round is not None and figures.last_round.inner_steps == (8, 4)
    summary = cast(RunSummary, SimpleNamespace(exchange="local", rounds=RoundFacts(
        bytes_per_sample=100.0, inner_steps=[8, 4], round_s=2.0, exchange_s=0.1,
        compression="int4", overlap=True)))
    [(key, line)] = _exchange(summary)
    assert key == "exchange" and "APPROXIMATE" in line
    assert "exchanged int4, overlapped: 100 bytes/sample, 0.10 s exposed" in line
    assert "8+4 inner steps, 2.00 s" in line and " · islands" not in line
    # Live membership: the round's islands, a lost one dropped from its average.
    islands = RoundEvent(t=2.0, rank=0, step=12, first_step=1, inner_steps=(8, 4),
                         islands=((0,), (1,)), round_s=2.0, exchange_s=0.1, exchanged_bytes=1,
                         bytes_per_sample=1.0, round_steps=6, island_hosts=("a", "b"),
                         dropped=("b",)).islands_text()
    summary = cast(RunSummary, SimpleNamespace(exchange="local", rounds=RoundFacts(
        bytes_per_sample=100.0, inner_steps=[8, 4], round_s=2.0, exchange_s=0.1,
        islands=islands)))
    assert _exchange(summary)[0][1].endswith(" · islands a | b (b lost: dropped)")
    assert _exchange(cast(RunSummary, SimpleNamespace(exchange="exact", rounds=None))) == []


def test_the_console_labels_a_local_run_approximate_with_its_round() -> None:
    from console.model.run import RunModel
    from console.widgets.balancer import policy_line
    from trainer.events import RoundEvent, StartEvent

    model = RunModel(cluster_name="c", hosts=("a", "b"), policy="static")
    model.figures.observe(StartEvent(
        t=0.0, rank=0, world_size=2, local_rank=0, host="a", pid=1, device="cpu",
        device_name="cpu", backend="gloo", model="simple_cnn", dataset="synthetic_image",
        global_batch=32, split=(16, 16), policy="static", step=0, total_steps=24,
        steps_per_epoch=16, threads=1, slowdown=1.0, exact=False, exchange="local"))
    assert "exchange local: APPROXIMATE" in policy_line(model).plain
    model.figures.observe(RoundEvent(t=2.0, rank=0, step=12, first_step=1, inner_steps=(8, 4),
                                     islands=((0,), (1,)), round_s=2.0, exchange_s=0.1,
                                     exchanged_bytes=38400, bytes_per_sample=100.0,
                                     round_steps=6, compression="int8"))
    assert ("exchanged int8: 100 bytes/sample, 0.10 s exposed · round 8+4 steps, 2.00 s"
            in policy_line(model).plain)
    assert "islands" not in policy_line(model).plain  # islands are hosts only when live
    model.figures.observe(RoundEvent(t=3.0, rank=0, step=18, first_step=13, inner_steps=(2, 2),
                                     islands=((0,), (1,)), round_s=1.0, exchange_s=0.1,
                                     exchanged_bytes=38400, bytes_per_sample=100.0,
                                     round_steps=2, island_hosts=("a", "b")))
    assert policy_line(model).plain.endswith(" · islands a | b")
