"""The plan of a low-communication run (``--exchange local``): pure functions, no collectives.

- Islands: which ranks form one worker (``islands_of``); each island's shares of an inner
  step's batch (``island_split``).
- A round: how many inner steps each island takes (``inner_steps``), in proportion to its speed
  so all arrive together, and where each island's batches lie in the run's sample order
  (``RoundPlan``): a round is a run of consecutive global batches of the exact run's order,
  island 0's first, then island 1's, and so on, so the samples of a local run are the samples of
  the exact run at the same step.
- The round length: ``round_steps_for`` makes the exchange at most a given fraction of a round,
  from the seconds one exchange and one inner step take. ``exchange_seconds`` predicts the
  first from a link speed (Mbit/s) per host, the input a measured link plugs into.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from trainer.balance.solve import round_split

FIRST_ROUND_STEPS = 4
"""Inner steps per island of the first round when ``round_steps`` is chosen by the run."""
MAX_ROUND_STEPS = 500
"""The longest round ``round_steps_for`` chooses, in inner steps per island."""
PLANNED_SHARE = 0.8
"""A round length the run chooses is planned for this share of ``round_exchange``, the most a
round's exchange may take: a round's steps and exchange vary from one round to the next (a busier
link or host; the first round's steps also carry the start-up), and a round planned at the limit
itself would pass it about every other round."""


def islands_of(ids: Sequence[int | str]) -> tuple[tuple[int, ...], ...]:
    """The ranks of each island, islands ordered by their lowest rank: ``[0, 0, 1]`` ->
    ``((0, 1), (2,))``. ``ids[r]`` is rank r's island id (any hashable label)."""
    members: dict[int | str, list[int]] = {}
    for rank, island in enumerate(ids):
        members.setdefault(island, []).append(rank)
    return tuple(tuple(ranks) for ranks in sorted(members.values()))


def island_split(split: Sequence[int], ranks: Sequence[int], global_batch: int
                 ) -> tuple[int, ...]:
    """Each of the island's ranks' share of one inner step's ``global_batch`` samples: the
    run's split restricted to the island, scaled to the whole batch (equal when all zero)."""
    weights = [float(split[r]) for r in ranks]
    if not any(weights):
        weights = [1.0] * len(ranks)
    return round_split(weights, global_batch, min_batch=0)


def inner_steps(speeds: Sequence[float], total: int) -> tuple[int, ...]:
    """``total`` inner steps shared between islands in proportion to ``speeds`` (samples per
    second, any scale): an island twice as fast takes twice the steps, so all finish together."""
    return round_split([max(float(s), 0.0) for s in speeds], total, min_batch=0)


@dataclass(frozen=True, kw_only=True)
class RoundPlan:
    """One round: it follows global step ``first_step - 1`` and consumes ``sum(steps)``
    global batches."""

    first_step: int
    """The global step (1-based) of the round's first batch."""
    steps: tuple[int, ...]
    """Inner steps of each island."""

    @property
    def last_step(self) -> int:
        """The global step the round ends at."""
        return self.first_step + sum(self.steps) - 1

    def global_steps(self, island: int) -> range:
        """The global steps whose batches island ``island`` trains on, in order."""
        start = self.first_step + sum(self.steps[:island])
        return range(start, start + self.steps[island])


def plan_round(step: int, total_steps: int, round_steps: int, speeds: Sequence[float],
               active: int | None = None) -> RoundPlan:
    """The round after global step ``step``: ``round_steps`` inner steps per island on average,
    shared by speed; the run's last round shares what is left. ``active``: the islands that
    train (``--island-schedule``: the others have speed 0), all when None."""
    total = min(round_steps * (len(speeds) if active is None else active), total_steps - step)
    return RoundPlan(first_step=step + 1, steps=inner_steps(speeds, total))


def round_steps_for(exchange_s: float, step_s: float, fraction: float) -> int:
    """The inner steps per island that make one exchange of ``exchange_s`` at most
    ``fraction`` of a round whose inner steps take ``step_s`` each (at least 1, at most
    ``MAX_ROUND_STEPS``)."""
    if step_s <= 0:
        return MAX_ROUND_STEPS
    wanted = exchange_s * (1 - fraction) / (fraction * step_s)
    return max(1, min(MAX_ROUND_STEPS, math.ceil(wanted)))


def hidden_round_steps(in_flight_s: float, step_s: float, fraction: float) -> int:
    """``outer_overlap``: the inner steps per island that hide an exchange of ``in_flight_s``
    behind the next round but for at most ``fraction`` of it: the exposed part,
    ``in_flight_s - H·step_s``, at most ``fraction × H·step_s`` (at least 1, at most
    ``MAX_ROUND_STEPS``)."""
    if step_s <= 0:
        return MAX_ROUND_STEPS
    wanted = in_flight_s / ((1 + fraction) * step_s)
    return max(1, min(MAX_ROUND_STEPS, math.ceil(wanted)))


def chosen_round_steps(exchange_s: float, step_s: float, fraction: float, overlap: bool
                       ) -> int:
    """The round length a run chooses after its first round, whose exchange took
    ``exchange_s`` and was waited for (with ``outer_overlap`` too: a first round has nothing
    to hide it behind). Without overlap the whole exchange is exposed, so the round is made
    long enough that it is at most ``fraction`` of it (``round_steps_for``); with overlap
    only what the next round's inner steps leave exposed counts (``hidden_round_steps``),
    so a round is about ``(1 - fraction) / fraction`` times shorter for the same link. Both
    plan for ``PLANNED_SHARE`` of ``fraction``, so that a round's noise stays within it."""
    rule = hidden_round_steps if overlap else round_steps_for
    return rule(exchange_s, step_s, fraction * PLANNED_SHARE)


def exposed_round_steps(round_steps: int, exposed_s: float, step_s: float, fraction: float
                        ) -> int:
    """After a later round, waited for or overlapped: the round length, made longer where what
    stayed exposed (the exchange, quantising, the outer step, any wait) took more than
    ``fraction`` of the round, to ``PLANNED_SHARE`` of it (``round_steps_for`` of the exposed
    part); kept where it stayed within ``fraction``, never shorter."""
    if round_steps_for(exposed_s, step_s, fraction) <= round_steps:
        return round_steps
    return round_steps_for(exposed_s, step_s, fraction * PLANNED_SHARE)


def next_round_steps(current: int | None, exchange_s: float, step_s: float, fraction: float,
                     overlap: bool) -> int:
    """The round length a run that chooses it (``round_steps`` not given) plans after a round
    whose exposed exchange took ``exchange_s``: after the first round (``current`` None)
    ``chosen_round_steps``; after a later one, waited for or overlapped, the round made longer
    where that exchange passed ``fraction`` of it (``exposed_round_steps``), so that a slower
    link or a busier host than the first round saw keeps the exchange within the rule for the
    whole run; never shorter (fewer, longer rounds cost quality only when needed)."""
    if current is None:
        return chosen_round_steps(exchange_s, step_s, fraction, overlap)
    return exposed_round_steps(current, exchange_s, step_s, fraction)


def exchange_seconds(parameter_bytes: int, link_mbit: Sequence[float]) -> float:
    """Predicted seconds of one round's exchange: a ring all-reduce of the parameter change
    (2(n-1)/n of its bytes through each island's link) over the slowest island link.
    ``link_mbit``: one speed per island (the measured per-host link where known)."""
    islands = len(link_mbit)
    if islands < 2:
        return 0.0
    slowest = min(link_mbit)
    return 2 * (islands - 1) / islands * parameter_bytes * 8 / (slowest * 1e6)


def bytes_per_sample(parameter_bytes: int, islands: int, samples: int) -> float:
    """Bytes each island sends in one round's ring all-reduce, per sample the round trained."""
    if islands < 2 or samples <= 0:
        return 0.0
    return 2 * (islands - 1) / islands * parameter_bytes / samples
