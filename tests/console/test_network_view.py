"""The network view: hosts drawn as columns and each pair as a line between them, each
direction's median Mbit/s and spread over its probes with their age, the bottleneck of the
exchange (never a benched host's link) marked, a benched host beside with why; pure figure
and layout tests and pilot tests at 80×24 and 200×50."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from console_helpers import make_app, screen_text, settle, wait_for

from console.model.link_probes import age_text, pair_median, probes
from console.model.run import RunModel
from console.model.topology import benched_hosts, run_topology, sit_outs, topology
from console.widgets.network import NetworkScreen, network_text
from remote.api import HostVerdict, PairLink, RankEvent, RunStatus
from tests.fake_runs import FakeController
from trainer.events import RebalanceEvent, StartEvent

HOSTS = ("alpha", "beta", "gamma")
GBIT, SHAPED = 117e6, 12.2e6  # bytes/s: a gigabit link, and gamma's shaped 100 Mbit/s one


def _link(source: str, target: str, rate: float, rtt: float) -> PairLink:
    return PairLink(source=source, target=target, address=f"10.0.0.{HOSTS.index(target) + 1}",
                    port=40000, reached=True, rtt_s=rtt, bytes_per_s=rate)


LINKS = (
    _link("alpha", "beta", GBIT, 0.0002), _link("beta", "alpha", GBIT * 0.98, 0.0002),
    _link("alpha", "gamma", SHAPED, 0.0011), _link("gamma", "alpha", SHAPED * 0.95, 0.0012),
    _link("beta", "gamma", SHAPED * 1.05, 0.0011), _link("gamma", "beta", SHAPED, 0.0011),
)
ESTIMATE = (
    HostVerdict(host="alpha", pays=True, gain=0.5, step_s=0.1),
    HostVerdict(host="beta", pays=True, gain=0.25, step_s=0.1),
    HostVerdict(host="gamma", pays=False, compute_saved_s=0.0041, exchange_added_s=0.038,
                step_s=0.1),
)


def test_the_bottleneck_is_the_exchanges_never_a_benched_hosts_link() -> None:
    benched = benched_hosts((30, 30, 0), {0: "alpha", 1: "beta", 2: "gamma"})
    assert benched == {"gamma"}
    top = topology(HOSTS, LINKS, ESTIMATE, benched, global_batch=60)
    limiting = top.limiting  # gamma's shaped links are slower, but gamma is not exchanging
    assert limiting is not None and (limiting.a, limiting.b) == ("alpha", "beta")
    assert limiting.median == GBIT * 0.98  # the slower direction
    assert [(link.limiting, link.in_exchange) for link in top.links] == [
        (True, True), (False, False), (False, False)]
    badges = {b.host: b for b in top.hosts}
    assert badges["gamma"].sits_out
    assert badges["gamma"].text == ("sits out: its exchange costs 38.0 ms for 4.1 ms of "
                                    "compute saved")
    # 60 samples in 0.1 s with alpha; without it, 1.5 times slower: alpha adds 200 samples/s.
    assert badges["alpha"].text == "adds 200.0 samples/s"
    assert badges["beta"].text == "adds 120.0 samples/s"
    # With gamma in the exchange, its slowest link is the exchange's bottleneck.
    everyone = topology(HOSTS, LINKS, ESTIMATE, set(), global_batch=60).limiting
    assert everyone is not None and (everyone.a, everyone.b) == ("alpha", "gamma")
    assert everyone.median == SHAPED * 0.95


def test_a_links_figures_are_the_median_and_spread_of_its_probes_with_their_age() -> None:
    mbit = 1e6 / 8
    there = dataclasses.replace(LINKS[0], rate_probes=tuple(r * mbit for r in (
        721, 930, 940, 950, 8765)), rtt_probes=(0.0002, 0.0003, 0.09), measured_t=100.0)
    found = probes(there)
    assert found is not None and found.count == 5
    assert found.median == 940 * mbit  # one outlier each way moves it not at all
    assert found.spread == pytest.approx((950 - 930) / 2 / 940)  # the inter-quartile range
    assert found.rtt_s == 0.0003 and found.age_s(112.0) == 12.0
    assert age_text(found.age_s(400.0)) == "5m" and age_text(None) == "—"
    old = probes(LINKS[0])  # a record from before the probes: its one figure, no spread
    assert old is not None and (old.median, old.spread, old.count) == (GBIT, None, 1)
    assert probes(dataclasses.replace(LINKS[0], reached=False)) is None
    back = probes(LINKS[1])
    assert pair_median(found, back) == min(940 * mbit, GBIT * 0.98)
    assert pair_median(found, None) is None


def test_the_runs_decision_overrides_the_estimate_and_before_it_the_estimate_decides() -> None:
    kept = topology(HOSTS, LINKS, ESTIMATE, benched_hosts((20, 20, 20), {
        0: "alpha", 1: "beta", 2: "gamma"}), global_batch=60)
    assert not kept.hosts[2].sits_out
    assert kept.hosts[2].text == "in the exchange (the estimate had it sit out)"
    before = topology(HOSTS, LINKS, ESTIMATE, benched_hosts((), {}), global_batch=60)
    assert [b.sits_out for b in before.hosts] == [False, False, True]
    missing = topology(HOSTS, LINKS, (HostVerdict(host="alpha", missing="profile"),), None, 60)
    assert missing.hosts[0].text == "no estimate: no stored profile (corral profile)"


def test_the_drawing_joins_each_pair_and_sets_a_benched_host_beside() -> None:
    mbit = 1e6 / 8
    links = tuple(dataclasses.replace(link, rate_probes=(
        link.bytes_per_s * 0.96, link.bytes_per_s, link.bytes_per_s * 1.04), measured_t=100.0)
        for link in LINKS if link.bytes_per_s)
    top = topology(HOSTS, links, ESTIMATE, {"gamma"}, global_batch=60)
    lines = network_text(top, now=112.0).plain.splitlines()
    assert lines[0].split() == ["alpha", "beta", "gamma", "→", "←", "Mbit/s:",
                                "median±spread,", "rtt,", "age"]
    # alpha–beta: a line from alpha's column to beta's, gamma's column dotted beside them.
    assert lines[1].startswith("   ├──────┤        ┆   ◀ →936.0±2% ←917.3±2% 0.20ms 12s")
    assert lines[2].startswith("   ├┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┤     →97.6±2%")  # gamma's: dotted
    assert lines[3].startswith("   │      ├┄┄┄┄┄┄┄┄┤     →102.5±2%")
    assert lines[4] == f"◀ bottleneck of the exchange: alpha–beta, {GBIT * 0.98 / mbit:,.1f} Mbit/s"
    assert "○ gamma  sits out: its exchange costs 38.0 ms for 4.1 ms of" in lines
    assert "         compute saved" in lines  # wrapped under the badge
    assert max(len(line) for line in lines) <= 66
    unmeasured = topology(HOSTS, (), ESTIMATE, None, global_batch=60)
    assert network_text(unmeasured).plain.startswith("No links measured yet")


def test_eight_hosts_are_numbered_columns_with_a_legend_within_80_columns() -> None:
    names = [f"host{i}" for i in range(8)]
    links = [PairLink(source=a, target=b, address="10.0.0.9", port=1, reached=True,
                      rtt_s=0.001, bytes_per_s=1e8, rate_probes=(1e8, 1.1e8))
             for a in names for b in names if a != b]
    lines = network_text(topology(names, links, (), {"host7"}, 60), now=0.0).plain.splitlines()
    assert lines[0].split()[:8] == [str(i) for i in range(1, 9)]
    assert "1 host0  2 host1" in "\n".join(lines)
    assert sum("├" in line for line in lines) == 28  # every pair drawn
    assert max(len(line) for line in lines) <= 66


def _start(rank: int) -> RankEvent:
    return RankEvent(host=HOSTS[rank], event=StartEvent(
        t=1.0, rank=rank, world_size=3, local_rank=0, host=HOSTS[rank], pid=100 + rank,
        device="cpu", device_name="test cpu", backend="gloo", model="simple_cnn",
        dataset="synthetic_image", global_batch=60, split=(30, 30, 0), policy="dynamic",
        step=0, total_steps=20, steps_per_epoch=100, threads=1, slowdown=1.0))


async def show_network(pilot: Any) -> None:
    """The check's mesh and the run's first split (gamma benched) into the model, then ``m``."""
    model = pilot.app.session.model
    model.apply(RunStatus(t=0.5, run_id="lab-1", state="pushing", links=LINKS,
                          estimate=ESTIMATE))
    for rank in range(3):
        model.apply(_start(rank))
    await pilot.press("m")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, NetworkScreen))


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
async def test_m_draws_the_network(size: tuple[int, int]) -> None:
    app = make_app(FakeController())
    async with app.run_test(size=size) as pilot:
        assert tuple(app.session.model.hosts) == HOSTS
        await show_network(pilot)
        await settle(pilot)
        text = screen_text(app)
        assert "○ gamma  sits out: its exchange costs 38.0 ms for 4.1 ms of" in text
        assert "● alpha  adds 200.0 samples/s" in text
        assert "◀ bottleneck of the exchange: alpha–beta, 917.3 Mbit/s" in text
        assert "├──────┤" in text and "┆" in text  # drawn: a line per pair, gamma beside
        await pilot.press("escape")
        assert not isinstance(app.screen, NetworkScreen)


def test_the_balancers_own_figures_word_a_host_it_benched() -> None:
    rank_hosts = {0: "alpha", 1: "beta", 2: "gamma"}
    change = RebalanceEvent(t=2.0, rank=0, step=41, previous=(20, 20, 20), split=(30, 30, 0),
                            reason="rank 2 sits out", predicted_gain=0.3,
                            times=(0.02, 0.02, 0.02), policy="dynamic",
                            compute_s=(0.0200, 0.0251), exchange_s=(0.0612, 0.0050))
    figures = sit_outs(change, rank_hosts)
    assert set(figures) == {"gamma"}
    top = topology(HOSTS, LINKS, ESTIMATE, {"gamma"}, global_batch=60, figures=figures)
    assert top.hosts[2].text == ("sits out: its exchange costs 56.2 ms for 5.1 ms of compute "
                                 "saved (balancer, step 41)")
    straggler = RebalanceEvent(t=2.0, rank=0, step=9, previous=(20, 20, 20), split=(30, 30, 0),
                               reason="", predicted_gain=0.3, times=(0.02, 0.02, 0.9),
                               policy="dynamic", compute_s=(0.9, 0.03), exchange_s=(0.06, 0.005))
    top = topology(HOSTS, LINKS, ESTIMATE, {"gamma"}, 60, sit_outs(straggler, rank_hosts))
    assert top.hosts[2].text == ("sits out: without it the step computes 870.0 ms faster and "
                                 "exchanges 55.0 ms less (balancer, step 9)")
    moved = RebalanceEvent(t=2.0, rank=0, step=9, previous=(20, 20, 20), split=(30, 29, 1),
                           reason="", predicted_gain=0.3, times=(0.02, 0.02, 0.9),
                           policy="dynamic")
    assert sit_outs(moved, rank_hosts) == {}
    # Two hosts benched in one change: the figures are theirs together, and each badge says so.
    both = RebalanceEvent(t=2.0, rank=0, step=6, previous=(20, 20, 20), split=(0, 60, 0),
                          reason="", predicted_gain=0.3, times=(0.02, 0.02, 0.02),
                          policy="dynamic", compute_s=(0.02, 0.15), exchange_s=(3.9, 0.0))
    top = topology(HOSTS, LINKS, ESTIMATE, {"alpha", "gamma"}, 60, sit_outs(both, rank_hosts))
    assert top.hosts[0].text == ("sits out with gamma: their exchange costs 3900.0 ms for "
                                 "130.0 ms of compute saved (balancer, step 6)")
    assert top.hosts[2].text.startswith("sits out with alpha: their exchange costs 3900.0 ms")


async def test_the_open_view_follows_the_balancer() -> None:
    app = make_app(FakeController())
    async with app.run_test(size=(80, 24)) as pilot:
        model = app.session.model
        await show_network(pilot)
        model.apply(RankEvent(host="alpha", event=RebalanceEvent(
            t=2.0, rank=0, step=12, previous=(30, 30, 0), split=(20, 20, 20),
            reason="rank 2 rejoins", predicted_gain=0.2, times=(0.02, 0.02, 0.0),
            policy="dynamic", compute_s=(0.03, 0.02), exchange_s=(0.005, 0.006))))
        await wait_for(pilot, lambda: "● gamma" in screen_text(app), timeout=5)
        assert "in the exchange (the estimate had it sit out)" in screen_text(app)


def _change(step: int, previous: tuple[int, ...], split: tuple[int, ...],
            figures: bool = True) -> RankEvent:
    return RankEvent(host="alpha", event=RebalanceEvent(
        t=2.0 + step, rank=0, step=step, previous=previous, split=split, reason="",
        predicted_gain=0.2, times=(0.02, 0.02, 0.02), policy="dynamic",
        compute_s=(0.02, 0.025) if figures else None,
        exchange_s=(0.06, 0.005) if figures else None))


def test_a_host_benched_again_by_an_undo_keeps_the_balancers_figures() -> None:
    """The balancer benches gamma (its figures), brings it back, then undoes that (an undo
    carries no figures): gamma's badge is still the balancer's, whatever the check estimated
    (on a machine with no stored profile, the estimate has no figure at all)."""
    model = RunModel(cluster_name="lab", hosts=list(HOSTS), policy="dynamic", global_batch=60)
    model.reset_run("lab-1")
    no_profile = tuple(HostVerdict(host=h, missing="profile") for h in HOSTS)
    model.apply(RunStatus(t=0.5, run_id="lab-1", state="running", links=LINKS,
                          estimate=no_profile))
    for rank in range(3):
        model.apply(_start(rank))
    for change in (_change(41, (20, 20, 20), (30, 30, 0)), _change(60, (30, 30, 0), (20, 20, 20)),
                   _change(70, (20, 20, 20), (30, 30, 0), figures=False)):
        model.apply(change)
    gamma = run_topology(model).hosts[2]
    assert gamma.sits_out and gamma.text == (
        "sits out: its exchange costs 55.0 ms for 5.0 ms of compute saved (balancer, step 41)")
