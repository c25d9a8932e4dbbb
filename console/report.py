"""``corral report`` as rich renderables: one run's summary, or several runs side by side.

The numbers come from ``remote.records.summary``; this module only lays them out (and draws the
terminal charts with ``console.termplot``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from console.baseline_text import baseline_facts
from console.formatting import (
    OPT_IN_HINT,
    OUTCOME_STYLES,
    fmt_duration,
    fmt_percent,
    fmt_rate,
    gpu_peak_text,
    state_text,
)
from console.termplot import Line, chart, legend
from figures import FIXED_COST_DOMINATES, Metric, RunSeries
from remote.api import FINAL_RUN_STATES, RunSummary
from trainer.events import exchange_text

LOSS_STYLE, EVAL_STYLE, RATE_STYLE, IDEAL_STYLE = "cyan", "magenta", "green", "yellow"


def fmt_number(value: float | None) -> str:
    """A loss or metric value: 4 significant digits, ``—`` when unknown."""
    return "—" if value is None else f"{value:.4g}"


def fmt_metric(metric: Metric | None) -> str:
    """``0.4123 (step 300), best 0.4011 (step 280)``."""
    if metric is None:
        return "—"
    text = f"{fmt_number(metric.final)} (step {metric.final_step})"
    if metric.best_step != metric.final_step:
        text += f", best {fmt_number(metric.best)} (step {metric.best_step})"
    return text


def title(summary: RunSummary) -> Text:
    """``run-id · name · ● completed``."""
    text = Text(summary.run_id, style="bold")
    if summary.name:
        text.append(f" · {summary.name}", style="bold cyan")
    state = summary.outcome.state
    text.append(" · ")
    text.append(f"● {state}", style=OUTCOME_STYLES.get(state, ""))
    return text


def what_happened(summary: RunSummary) -> Text | None:
    """For a run that did not complete: where it stopped and why, in one or two lines."""
    outcome = summary.outcome
    if outcome.state == "completed":
        return None
    total = f"/{summary.total_steps}" if summary.total_steps else ""
    verb = {"failed": "failed", "stopped": "was stopped (interrupted)"}.get(
        outcome.state, f"is {outcome.state}")
    where = "" if summary.no_events else f" after step {outcome.ended_at_step}{total}"
    text = Text(f"The run {verb}{where}.",
                style=OUTCOME_STYLES.get(outcome.state, "bold"))
    if outcome.failed_rank is not None:
        text.append(f"\nFirst failure: rank {outcome.failed_rank} on {outcome.failed_host}: "
                    f"{outcome.error or '?'}")
    if outcome.last_lines:
        text.append(f"\nIts last lines ({outcome.failed_host} rank {outcome.failed_rank}):",
                    style="bold")
        text.append("".join(f"\n  {line}" for line in outcome.last_lines), style="dim")
    if outcome.collateral and outcome.failed_rank is None:  # a stop's: no failure of its own
        text.append("\nFailed as the stop ended their peers (no failure of the run's own): "
                    + "; ".join(outcome.collateral))
    elif outcome.collateral:
        text.append("\nCollateral (they followed from it): " + "; ".join(outcome.collateral))
    if outcome.detail:
        text.append(f"\nRecorded: {outcome.detail}")
    return text


def facts(summary: RunSummary) -> Table:
    """The key/value part of a one-run report."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(summary.started))
    total = f"/{summary.total_steps}" if summary.total_steps else ""
    if summary.no_events:
        return _as_is_facts(summary, started)
    labelled = [
        ("cluster", f"{summary.cluster} · hosts {', '.join(summary.hosts)}"),
        ("training", _training(summary)),
        *_exchange(summary),
        ("started", started),
        ("steps", f"{summary.steps_done}{total} in {fmt_duration(summary.wall_s)}"),
        ("throughput", f"mean {fmt_rate(summary.mean_samples_per_s)} samples/s · p50 "
                       f"{fmt_rate(summary.p50_samples_per_s)} · p95 "
                       f"{fmt_rate(summary.p95_samples_per_s)}"),
        *baseline_facts(summary.baseline),
        ("compute share", f"{fmt_percent(summary.efficiency)} of the ideal "
                          f"{fmt_rate(summary.ideal_samples_per_s)} samples/s (measured / "
                          "ideal; the ideal: every rank's samples / compute time in this run, "
                          "added up)"),
    ]
    why = fixed_cost_note(summary.outside_compute)
    if why is not None:
        labelled.append(("why", why))
    labelled.append(("loss", fmt_metric(summary.loss)))
    labelled += [(f"eval {name}", fmt_metric(metric)) for name, metric in summary.eval.items()]
    if summary.final_lr is not None:
        labelled.append(("final lr", f"{summary.final_lr:.4g}"))
    labelled.append(("balancer", f"{len(summary.moves)} move(s)"))
    labelled.append(("restarts", f"{summary.restarts}, {fmt_duration(summary.lost_s)} lost to "
                             "stops and restarts"))
    for label, value in labelled:
        table.add_row(label, Text(value))
    return table


def _training(summary: RunSummary) -> str:
    """``MODEL on DATA · global batch B · policy P``; a plain script's: what it lacks and what
    gives it."""
    if summary.plain_script:
        return (f"{summary.model or '?'}, a plain script · samples per step: what its ranks "
                f"reported · no balancing and no loss: {OPT_IN_HINT} gives both")
    return (f"{summary.model or '?'} on {summary.dataset or '?'} · global batch "
            f"{summary.global_batch or '?'} · policy {summary.policy or '?'}")


def _hosts_with_ranks(summary: RunSummary) -> str:
    """``fast (ranks 0-1), slow (rank 2)``; the bare host names when ranks were not recorded."""
    named = []
    for host in summary.hosts:
        ranks = summary.host_ranks.get(host)
        if not ranks:
            named.append(host)
            continue
        span = f"{ranks[0]}-{ranks[-1]}" if len(ranks) > 1 else str(ranks[0])
        named.append(f"{host} (rank{'s' if len(ranks) > 1 else ''} {span})")
    return ", ".join(named)


def _as_is_facts(summary: RunSummary, started: str) -> Table:
    """A run with no event copied here: what corral itself recorded, no question marks."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    world = sum(len(r) for r in summary.host_ranks.values())
    rows = [
        ("cluster", f"{summary.cluster} · hosts {_hosts_with_ranks(summary)}"),
        ("training", (f"on {world} rank(s): " if world else "")
         + "no step event copied here (a run no corral followed: `corral attach` copies its "
           "events; or one that ended before its first optimizer step)"),
        ("started", started),
        ("ran", _ran(summary)),
        ("outcome", summary.outcome.state + (f": {summary.outcome.detail}"
                                             if summary.outcome.detail else "")),
        ("restarts", str(summary.restarts)),
    ]
    for label, value in rows:
        table.add_row(label, Text(value))
    return table


def _ran(summary: RunSummary) -> str:
    """How long a run with no event copied here ran, as far as its record says."""
    if summary.wall_s is not None:
        return fmt_duration(summary.wall_s)
    if summary.outcome.state in FINAL_RUN_STATES:  # recorded by a corral without end times
        return "not recorded (it ended with nobody following it)"
    return "until now (no outcome recorded yet)"


def fixed_cost_note(outside_compute: float | None) -> str | None:
    """Why a run's efficiency is low when its steps are dominated by fixed per-step cost."""
    if outside_compute is None or outside_compute < FIXED_COST_DOMINATES:
        return None
    return (f"{fmt_percent(outside_compute)} of each step is spent outside the ranks' "
            "forward and backward (gradient all-reduce, optimizer, fixed per-step work): the "
            "step is dominated by fixed per-step cost, which the ideal leaves out and more "
            "ranks do not share, so fewer ranks are faster here (the balancer may give some a "
            "share of 0); a larger model or global batch spreads that cost")


def ranks_table(summary: RunSummary) -> Table:
    """Per rank: host, device, samples/s, utilisation (compute / step time), final share,
    tokens per step when the run shares tokens, with a GPU rank its GPU (SM) utilisation
    and peak GPU memory (allocated / reserved), and the training state each held against its
    budget when the ranks reported them."""
    table = Table(title="ranks", title_justify="left")
    tokens = any(rank.tokens_per_step is not None for rank in summary.ranks)
    gpu = any(rank.gpu_util is not None or rank.gpu_peak_reserved is not None
              for rank in summary.ranks)
    state = any(rank.state_bytes is not None for rank in summary.ranks)
    for name in ("rank", "host", "device", "samples/s", "utilisation", "final share",
                 *(("tokens/step",) if tokens else ()),
                 *(("GPU util", "peak GPU mem") if gpu else ()),
                 *(("state / budget",) if state else ())):
        table.add_column(name, justify="right" if name not in ("host", "device") else "left")
    for rank in summary.ranks:
        cells = [str(rank.rank), rank.host, rank.device, fmt_rate(rank.mean_samples_per_s),
                 fmt_percent(rank.utilisation), fmt_percent(rank.final_share)]
        if tokens:
            cells.append(fmt_rate(rank.tokens_per_step))
        if gpu:
            cells += [fmt_percent(None if rank.gpu_util is None else rank.gpu_util / 100),
                      gpu_peak_text(rank.gpu_peak_allocated, rank.gpu_peak_reserved)]
        if state:
            cells.append(state_text(rank.state_bytes, rank.state_budget))
        table.add_row(*cells)
    return table



def moves_table(summary: RunSummary) -> Table:
    """Each balancer move: step, old and new split, predicted and measured gain, reason."""
    table = Table(title="balancer moves", title_justify="left")
    for name in ("step", "split", "predicted", "measured", "reason"):
        table.add_column(name, overflow="fold")
    for move in summary.moves:
        table.add_row(str(move.step), f"{move.previous} → {move.split}",
                      fmt_percent(move.predicted_gain, signed=True),
                      fmt_percent(move.measured_gain, signed=True), Text(move.reason))
    return table


def generations_table(summary: RunSummary) -> Table:
    """Each change of the run's hosts: generation, step, who joined or left and why, the
    ranks after it, the steps redone and the time to the next completed step."""
    table = Table(title="membership (live joins and leaves)", title_justify="left")
    for name in ("gen", "step", "change", "hosts", "why", "ranks", "redone", "to step"):
        table.add_column(name, overflow="fold")
    for g in summary.generations:
        why = ": ".join(w for w in (g.cause, g.reason) if w)  # ranks_died: disk full on …
        took = f"{g.seconds_to_step:.1f} s" if g.seconds_to_step is not None else "—"
        table.add_row(str(g.generation), str(g.step), g.change, ", ".join(g.hosts), Text(why),
                      str(g.world_size), str(g.redone_steps), took)
    return table


def samples_table(summary: RunSummary) -> Table:
    """The trained model's greedy generations from held-out prompts."""
    table = Table(title="samples (greedy, held-out prompts)", title_justify="left")
    table.add_column("prompt", overflow="fold", style="dim")
    table.add_column("generated", overflow="fold")
    for sample in summary.samples:
        table.add_row(Text(sample.prompt), Text(sample.output))
    return table


def charts(series: RunSeries, width: int, height: int = 10) -> list[RenderableType]:
    """Loss (with eval) and throughput (with its ideal) over steps, as terminal charts."""
    loss_lines = [Line("loss", series.loss, LOSS_STYLE)]
    for name, points in series.eval.items():
        value_at_step = dict(points)
        loss_lines.append(Line(f"eval {name}", [value_at_step.get(step) for step in series.steps],
                               EVAL_STYLE))
    rate_lines = [Line("samples/s", series.samples_per_s, RATE_STYLE),
                  Line("ideal", series.ideal, IDEAL_STYLE)]
    out: list[RenderableType] = []
    for lines in (loss_lines, rate_lines):
        out.append(legend(lines))
        out.extend(chart(lines, series.steps, width, height))
    return out


def one_run(summary: RunSummary, series: RunSeries | None = None, *,
            width: int = 80) -> RenderableType:
    """The report of one run (with terminal charts when ``series`` is given)."""
    parts: list[RenderableType] = [title(summary)]
    happened = what_happened(summary)
    if happened is not None:
        parts.append(happened)
    if summary.outcome.cleanup:  # a host cut off: what ran there is not confirmed ended
        parts.append(Text(f"Cleanup: {summary.outcome.cleanup}", style="yellow"))
    parts.append(facts(summary))
    if summary.ranks:
        parts.append(ranks_table(summary))
    if summary.moves:
        parts.append(moves_table(summary))
    if summary.generations:
        parts.append(generations_table(summary))
    if summary.samples:
        parts.append(samples_table(summary))
    if series is not None:
        parts += charts(series, width)
    return Group(*parts)


COMPARED: list[tuple[str, Callable[[RunSummary], str]]] = [
    ("name", lambda s: s.name or "—"),
    ("state", lambda s: s.outcome.state),
    ("policy", lambda s: s.policy or "?"),
    ("hosts / ranks", lambda s: f"{len(s.hosts)} / {len(s.ranks)}"),
    ("steps", lambda s: f"{s.steps_done}/{s.total_steps or '?'}"),
    ("wall time", lambda s: fmt_duration(s.wall_s)),
    ("mean samples/s", lambda s: fmt_rate(s.mean_samples_per_s)),
    ("p50 samples/s", lambda s: fmt_rate(s.p50_samples_per_s)),
    ("p95 samples/s", lambda s: fmt_rate(s.p95_samples_per_s)),
    ("ideal samples/s", lambda s: fmt_rate(s.ideal_samples_per_s)),
    ("compute share", lambda s: fmt_percent(s.efficiency)),
    ("% of Σ solo", lambda s: fmt_percent(s.baseline.of_sum if s.baseline else None)),
    ("× fastest", lambda s: fmt_number(s.baseline.x_fastest if s.baseline else None)),
    ("min utilisation", lambda s: fmt_percent(min(
        (r.utilisation for r in s.ranks if r.utilisation is not None), default=None))),
    ("balancer moves", lambda s: str(len(s.moves))),
    ("final loss", lambda s: fmt_number(s.loss.final if s.loss else None)),
    ("best loss", lambda s: fmt_number(s.loss.best if s.loss else None)),
    ("lost to restarts", lambda s: fmt_duration(s.lost_s)),
]
"""The comparison's rows: a label and how to show it for one run."""


def comparison(summaries: Sequence[RunSummary]) -> Table:
    """Several runs side by side: one column per run, one row per figure."""
    table = Table(title="runs compared", title_justify="left")
    table.add_column("")
    for summary in summaries:
        table.add_column(summary.run_id, justify="right", overflow="fold")
    for label, show in COMPARED:
        table.add_row(label, *[show(s) for s in summaries])
    evals = sorted({name for s in summaries for name in s.eval})
    for name in evals:
        table.add_row(f"final eval {name}", *[
            fmt_number(s.eval[name].final) if name in s.eval else "—" for s in summaries])
    return table


def _exchange(summary: RunSummary) -> list[tuple[str, str]]:
    """A local run's line: APPROXIMATE, its bytes per sample and its round (none if exact)."""
    if summary.exchange != "local":
        return []
    line = "local — APPROXIMATE (islands average their changes every round; docs/lowcomm.md)"
    rounds = summary.rounds
    if rounds is not None:
        exchanged = exchange_text(rounds.compression, rounds.overlap, rounds.bytes_per_sample,
                                  rounds.exchange_s)
        line += (f" · exchanged {exchanged} · round of "
                 f"{'+'.join(map(str, rounds.inner_steps))} inner steps, {rounds.round_s:.2f} s")
        if rounds.islands:
            line += f" · islands {rounds.islands}"
    return [("exchange", line)]
