"""A rank whose speed jumps between two levels from window to window (another process taking
its core now and then: on the shared benchmark VM an emulated 3x-slow rank at a fixed share
measured 30 ms in some 10-step windows and 60 ms in others) is not chased: such jumps are
beyond the change tolerance, so each one reads as a speed change, and the balancer used to
follow every one of them. Synthetic timings only (pure Python, no wall clock)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from tests.trainer.test_balancer import Cluster, config
from trainer.balance.balancer import Balancer, LinearFit, equal_split

B = 64
FITS = (LinearFit(0.0016, 0.0007), LinearFit(0.0048, 0.0021))
"""Rank 0 and a 3x slower rank 1 (simple_cnn at B=64 on the benchmark VM: ~1.6 ms + 0.7 ms
per sample on one core)."""


@dataclass
class FlappingCluster(Cluster):
    """Rank 1 runs 1.9x slower in a random 30 % of the 10-step windows."""

    factor: float = 1.0
    steps: int = 0

    def times(self, split: tuple[int, ...]) -> list[float]:
        if self.steps % 10 == 0:
            self.factor = 1.9 if self.rng.random() < 0.3 else 1.0
        self.steps += 1
        fast, slow = super().times(split)
        return [fast, slow * self.factor]


def _late_run(seed: int, split: tuple[int, ...] | None) -> tuple[float, int]:
    """Seconds of steps 61..400 (the slowest rank's time per step) and the balancer's moves
    in them; ``split`` set: that static split instead of the dynamic policy. The cluster's
    draws do not depend on the split, so every split meets the same jumps."""
    cluster = FlappingCluster(list(FITS), seed=seed)
    balancer = Balancer(config(global_batch=B), split or equal_split(B, 2))
    seconds, moves = 0.0, 0
    for step in range(1, 401):
        times = cluster.times(balancer.split)
        if step > 60:
            seconds += max(times)
        if split is None:
            balancer.observe(balancer.split, times)
            if step % 10 == 0 and balancer.decide(step) is not None and step > 60:
                moves += 1
    return seconds, moves


def test_a_rank_flipping_between_two_speeds_is_not_chased() -> None:
    ratios, moves = [], []
    for seed in range(10):
        seconds, moved = _late_run(seed, None)
        best_static = min(_late_run(seed, (b, B - b))[0] for b in range(44, 61))
        ratios.append(best_static / seconds)
        moves.append(moved)
    # 34 decisions per run: following every jump moved the split at about 1 in 3 of them
    # (108 moves in these 10 runs; median 0.969 of the best static split).
    assert sum(moves) <= 60, f"moves after settling per run: {moves}"
    assert statistics.median(ratios) >= 0.975, f"throughput / best static split: {ratios}"


def test_a_checkpoint_keeps_the_last_speed_change() -> None:
    from trainer.balance.fit import RankTimes

    cluster = FlappingCluster(list(FITS), seed=0)
    balancer = Balancer(config(global_batch=B), equal_split(B, 2))
    for step in range(1, 201):
        balancer.observe(balancer.split, cluster.times(balancer.split))
        if step % 10 == 0:
            balancer.decide(step)
    state = balancer.state_dict()
    assert state["ranks"][1]["last_change"] is not None  # the jumps were seen as changes
    restored = [RankTimes.from_state(raw) for raw in state["ranks"]]
    assert [r.last_change for r in restored] == [r.last_change for r in balancer._ranks]
