"""The pre-run estimate says which hosts pay for their gradient exchange and which sit out, and
it is the balancer's own decision: fed the same speeds and exchange, the balancer does the same."""

from __future__ import annotations

import pytest

from trainer.balance.balancer import Balancer
from trainer.balance.config import BalancerConfig
from trainer.balance.cost import ExchangeTimes, ring_exchange_s, ring_factor
from trainer.balance.estimate import HostSpeed, LinkExchange, cluster_plan, estimate, rank_costs

GRADIENT = 45_000_000
"""resnet18's gradient in bytes, as in issue 32's GPU + CPU cluster."""
TEN_GBIT = 1.25e9
BATCH = 512
HOSTS = (
    HostSpeed(name="gpu", ranks=1, fixed_s=0.005, per_sample_s=0.0005,
              link_bytes_per_s=TEN_GBIT),
    HostSpeed(name="laptop", ranks=1, fixed_s=0.01, per_sample_s=0.001,
              link_bytes_per_s=TEN_GBIT),
    HostSpeed(name="cpu-box", ranks=1, fixed_s=0.05, per_sample_s=0.02,
              link_bytes_per_s=TEN_GBIT),
)


def test_the_slow_host_is_estimated_to_sit_out_and_the_others_to_pay() -> None:
    gpu, laptop, cpu_box = estimate(HOSTS, BATCH, GRADIENT)
    assert gpu.pays and laptop.pays and not cpu_box.pays
    assert laptop.gain > 0.05  # worth its exchange: more throughput than the GPU alone
    # The CPU box would add the third rank's share of the ring and save less compute.
    three, two = (ring_exchange_s(GRADIENT, n, TEN_GBIT) for n in (3, 2))
    assert cpu_box.exchange_added_s == pytest.approx(three - two)
    assert 0 <= cpu_box.compute_saved_s < cpu_box.exchange_added_s
    # The laptop's numbers: the compute it takes off the GPU against the pair's exchange.
    assert laptop.exchange_added_s == pytest.approx(two)
    assert laptop.compute_saved_s > laptop.exchange_added_s


def test_a_host_without_a_profile_gets_no_estimate_and_says_what_is_missing() -> None:
    unknown = HostSpeed(name="new-box", ranks=2, fixed_s=None, per_sample_s=None,
                        link_bytes_per_s=TEN_GBIT)
    verdicts = estimate((*HOSTS[:2], unknown), BATCH, GRADIENT)
    assert [v.missing for v in verdicts] == ["others"] * 2 + ["profile"]
    no_link = HostSpeed(name="wifi", ranks=1, fixed_s=0.01, per_sample_s=0.001,
                        link_bytes_per_s=None)
    assert estimate((HOSTS[0], no_link), BATCH, GRADIENT)[1].missing == "link speed"


def test_the_balancer_fed_the_same_speeds_and_exchange_benches_the_same_host() -> None:
    costs, links, _ = rank_costs(HOSTS)
    exchange = LinkExchange(GRADIENT, links)
    planned = cluster_plan(HOSTS, BATCH, GRADIENT)
    assert planned is not None
    config = BalancerConfig(policy="dynamic", global_batch=BATCH, world_size=3,
                            rebalance_every=10, allow_zero=True, threshold=0.0)
    balancer = Balancer(config, (171, 171, 170))
    split, reasons = (171, 171, 170), []
    for step in range(1, 201):
        balancer.observe(split, [costs[r].seconds(b) for r, b in enumerate(split)])
        active = tuple(r for r, b in enumerate(split) if b > 0)
        balancer.observe_exchange(split, [exchange.predict(active)] * 3)
        if step % 10 == 0 and (decision := balancer.decide(step)) is not None:
            split = decision.split
            reasons.append(decision.reason)
    assert split[2] == 0 and planned.split[2] == 0  # the same host sits out
    assert max(abs(a - b) for a, b in zip(split, planned.split, strict=True)) <= 0.02 * BATCH
    # ...and its reason counts the exchange the estimate says the benched host would add.
    added_ms = estimate(HOSTS, BATCH, GRADIENT)[2].exchange_added_s * 1000
    assert any("rank 2 sits out" in r and f"{added_ms:.1f} ms less exchange" in r
               for r in reasons), reasons


def test_a_hopeless_host_saves_nothing_and_still_names_the_exchange_it_would_add() -> None:
    # The CPU box beside a GPU: one sample on it takes longer than the GPU's whole step.
    hopeless = HostSpeed(name="cpu-box", ranks=2, fixed_s=0.5, per_sample_s=0.05,
                         link_bytes_per_s=TEN_GBIT)
    gpu, cpu_box = estimate((HOSTS[0], hopeless), BATCH, GRADIENT)
    assert gpu.pays and not cpu_box.pays and cpu_box.compute_saved_s == 0
    assert cpu_box.exchange_added_s == pytest.approx(ring_exchange_s(GRADIENT, 3, TEN_GBIT))


def test_a_rejoin_is_never_predicted_free_after_a_rank_ran_alone() -> None:
    """Benched down to one rank (which exchanges nothing), the balancer still knows what two
    ranks would exchange: from the sets that did, not from the rank alone."""
    exchange = ExchangeTimes()
    fixed_s, ring_s = 0.002, 0.060  # overhead of any step; exchange per unit of ring factor
    for _ in range(5):  # the warm-up: all three ranks
        exchange.add((0, 1, 2), fixed_s + ring_s * ring_factor(3))
    for _ in range(20):  # then rank 1 alone, measured far more often
        exchange.add((1,), fixed_s)
    assert exchange.predict((0, 1)) == pytest.approx(fixed_s + ring_s * ring_factor(2))
    assert exchange.predict((0,)) == pytest.approx(fixed_s)  # alone: no exchange
    assert ExchangeTimes().predict((0, 1)) == 0.0  # nothing measured: compute decides


@pytest.mark.parametrize(("slow_link_computes", "known"),
                         [("slowest", True), ("slowest", False), ("fastest", True)])
def test_a_slow_link_benches_its_own_host_and_not_the_fast_pair(known: bool,
                                                                 slow_link_computes: str) -> None:
    """Three ranks, the third behind 70 Mbit/s: every step of the three is slow because of that
    one link. Knowing each rank's link (the pre-flight check's), the balancer benches the third
    alone and keeps the fast pair (what the links say is fastest); the same run without the
    links also ends on the pair, once it has measured it. Knowing the links, so does a run whose
    slow-link host is the fastest to compute (without them, that host alone is where measuring
    one rank less at a time leads: no set it meets shows the pair's fast link)."""
    gbit, slow_link = 1.25e8, 70e6 / 8
    hosts = (*(HostSpeed(name=f"n{i}", ranks=1, fixed_s=0.005, per_sample_s=0.0005,
                         link_bytes_per_s=gbit) for i in (1, 2)),
             HostSpeed(name="n3", ranks=1, fixed_s=0.01 if slow_link_computes == "slowest"
                       else 0.004, per_sample_s=0.0015 if slow_link_computes == "slowest"
                       else 0.0004, link_bytes_per_s=slow_link))
    gradient, batch = 608_000, 48  # simple_cnn's float32 gradient, the bench's batch
    costs, links, _ = rank_costs(hosts)
    truth = LinkExchange(gradient, links)
    planned = cluster_plan(hosts, batch, gradient)
    assert planned is not None and planned.active == (0, 1)
    config = BalancerConfig(policy="dynamic", global_batch=batch, world_size=3,
                            rebalance_every=10, allow_zero=True, threshold=0.0,
                            link_mbit=tuple(b * 8 / 1e6 for b in links) if known else None)
    balancer = Balancer(config, (16, 16, 16))
    split, visited = (16, 16, 16), []
    for step in range(1, 301):
        balancer.observe(split, [costs[r].seconds(b) for r, b in enumerate(split)])
        active = tuple(r for r, b in enumerate(split) if b > 0)
        balancer.observe_exchange(split, [truth.predict(active)] * 3)
        if step % 10 == 0 and (decision := balancer.decide(step)) is not None:
            split = decision.split
            visited.append(tuple(r for r, b in enumerate(split) if b > 0))
    assert split[2] == 0 and split[0] > 0 and split[1] > 0, visited
    if known:  # straight to the pair: never a fast rank alone
        assert all(len(active) >= 2 for active in visited), visited
