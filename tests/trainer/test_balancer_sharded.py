"""Under sharded state (``shard_state``) a benched rank still holds a slice: it takes part in
the reduce into the slices and in the gather of the parameters every step, so benching it saves
compute only. The balancer's exchange model, its sit-out decisions and the pre-run estimate
count that (trainer/balance/cost.py, the one derivation); replicated runs keep theirs."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from console.formatting import estimate_text
from trainer.balance.balancer import Balancer
from trainer.balance.config import rank0_config
from trainer.balance.cost import ExchangeTimes, ring_exchange_s
from trainer.balance.estimate import HostSpeed, cluster_plan, estimate, rank_costs
from trainer.settings.run_settings import ShardState
from trainer.settings.train_config import TrainConfig

GBIT = 1.25e8
SLOW_LINK = 70e6 / 8
GRADIENT, BATCH = 608_000, 48  # simple_cnn's float32 gradient, the bench's batch
WORLD_S = 0.030
"""The exchange measured under all three ranks."""


@pytest.mark.parametrize(("stage", "links", "query", "expected_s"), [
    # replicated: a smaller set pays a smaller ring, and less still without the slow link
    ("replicate", None, (0, 1), WORLD_S * 1 / (4 / 3)),
    ("replicate", None, (0,), 0.0),
    ("replicate", (1000.0, 1000.0, 70.0), (0, 1), WORLD_S * 1 / (4 / 3) * 70 / 1000),
    # sharded: every set pays the world's exchange, the slow link's host benched or not
    ("gradients", None, (0, 1), WORLD_S),
    ("gradients", None, (0,), WORLD_S),
    ("optimizer", (1000.0, 1000.0, 70.0), (0, 1), WORLD_S),
    ("gradients", (1000.0, 1000.0, 70.0), (0, 1, 2), WORLD_S),
])
def test_benching_a_rank_saves_exchange_only_when_the_state_is_replicated(
        stage: ShardState, links: tuple[float, ...] | None, query: tuple[int, ...],
        expected_s: float) -> None:
    trainer = TrainConfig(shard_state=stage, policy="dynamic", global_batch=BATCH)
    config = rank0_config(trainer, 3, (None,) * 3, (None,) * 3, links)
    exchange = ExchangeTimes(links=links, world=config.exchange_world)
    for _ in range(5):
        exchange.add((0, 1, 2), WORLD_S)
    assert exchange.predict(query) == pytest.approx(expected_s)
    # Sharded, a set never met is grounded by the world's measurement: it is the same exchange.
    assert exchange.grounded(query) == (stage != "replicate" or len(query) <= 1
                                        or links is not None)


def _exchange_s(stage: ShardState, active: tuple[int, ...], links: Sequence[float]) -> float:
    """What the step's exchange takes: the active ranks' ring, or, sharded, every rank's (each
    holds a slice) — reduce and gather (2(n-1)/n of the gradient) through the slowest link."""
    members = active if stage == "replicate" else (0, 1, 2)
    if len(members) <= 1:
        return 0.0
    n = len(members)
    return 2 * (n - 1) / n * GRADIENT / min(links[r] for r in members)


@pytest.mark.parametrize(("stage", "third", "known", "benched", "says_slice"), [
    # the third host computes slowest and sits behind 70 Mbit/s: replicated, benching it takes
    # its link out of the ring and pays; sharded, its slice keeps it in the exchange, so
    # benching it would only lose its compute
    ("replicate", "slow", True, True, False),
    ("gradients", "slow", True, False, False),
    ("gradients", "slow", False, False, False),
    ("optimizer", "slow", True, False, False),
    # one sample on it takes longer than the others' whole share: benched either way, for
    # its compute, and a sharded run's reason says its exchange stays
    ("gradients", "hopeless", True, True, True),
    ("replicate", "hopeless", True, True, False),
])
def test_a_sharded_run_benches_a_host_only_for_its_compute(
        stage: ShardState, third: str, known: bool, benched: bool, says_slice: bool) -> None:
    fixed, per_sample = (0.01, 0.0015) if third == "slow" else (0.5, 0.05)
    hosts = (*(HostSpeed(name=f"n{i}", ranks=1, fixed_s=0.005, per_sample_s=0.0005,
                         link_bytes_per_s=GBIT) for i in (1, 2)),
             HostSpeed(name="n3", ranks=1, fixed_s=fixed, per_sample_s=per_sample,
                       link_bytes_per_s=SLOW_LINK))
    costs, links, _ = rank_costs(hosts)
    config = rank0_config(
        TrainConfig(shard_state=stage, policy="dynamic", global_batch=BATCH,
                    rebalance_every=10, rebalance_threshold=0.0),
        3, (None,) * 3, (None,) * 3, tuple(b * 8 / 1e6 for b in links) if known else None)
    balancer = Balancer(config, (16, 16, 16))
    split: tuple[int, ...] = (16, 16, 16)
    visited, reasons = [], []
    for step in range(1, 301):
        compute = [costs[r].seconds(b) if b else 0.0 for r, b in enumerate(split)]
        active = tuple(r for r, b in enumerate(split) if b > 0)
        exchange = _exchange_s(stage, active, links)
        balancer.observe(split, compute)
        balancer.observe_exchange(split, [exchange] * 3)
        balancer.observe_step(split, max(compute) + exchange)
        if step % 10 == 0 and (decision := balancer.decide(step)) is not None:
            split = decision.split
            visited.append(split)
            reasons.append(decision.reason)
    assert any(s[2] == 0 for s in visited) == benched, visited
    assert (split[2] == 0) == benched, visited
    assert any("it holds a slice: its exchange stays" in r for r in reasons) == says_slice
    # The pre-run estimate is the same decision from the same facts.
    planned = cluster_plan(hosts, BATCH, GRADIENT, stage)
    assert planned is not None and (planned.split[2] == 0) == benched


def test_the_estimate_says_a_sharded_host_pays_its_exchange_benched_or_not() -> None:
    hopeless = HostSpeed(name="cpu-box", ranks=1, fixed_s=0.5, per_sample_s=0.05,
                         link_bytes_per_s=GBIT)
    gpu = HostSpeed(name="gpu", ranks=2, fixed_s=0.005, per_sample_s=0.0005,
                    link_bytes_per_s=GBIT)
    stages: tuple[ShardState, ...] = ("replicate", "optimizer", "gradients")
    rows = {stage: estimate((gpu, hopeless), BATCH, GRADIENT, stage)[1] for stage in stages}
    assert not any(v.pays for v in rows.values())
    assert all(v.compute_saved_s == 0 for v in rows.values())
    # Replicated, benching it takes it out of the ring; sharded, what it adds stays: its part
    # of the reduce and the gather (stage 1 all-reduces, then gathers: 3(n-1)/n of the model).
    assert rows["replicate"].exchange_added_s == pytest.approx(
        ring_exchange_s(GRADIENT, 3, GBIT) - ring_exchange_s(GRADIENT, 2, GBIT))
    for stage in stages[1:]:
        assert rows[stage].exchange_added_s == pytest.approx(
            ring_exchange_s(GRADIENT, 3, GBIT, stage) - ring_exchange_s(GRADIENT, 2, GBIT, stage))
    assert rows["optimizer"].exchange_added_s > rows["gradients"].exchange_added_s > 0
    assert [v.holds_slice for v in rows.values()] == [False, True, True]
    assert "benched too: it holds a slice" in estimate_text(rows["gradients"])
    assert "slice" not in estimate_text(rows["replicate"])
