"""Load balancing: how the global batch is shared among unequal ranks.

Three policies (``BalancerConfig.policy``):

- ``static``: the given split, never changed.
- ``proportional``: shares ∝ per-rank capacity (samples/s) from a warm-up or a stored profile;
  the trainer computes it once with ``proportional_split`` and passes it in as the split.
- ``dynamic``: every ``rebalance_every`` steps rank 0 fits each rank's compute time as a line
  ``t_r(b) = a_r + c_r·b`` from measured forward+backward seconds, solves the split that makes
  all ranks finish together (``min_max_split``), and moves towards it when the predicted gain
  beats ``threshold`` plus the measurement noise (the dead-band). The first move after the
  start or a speed change goes half way (``FIRST_MOVE``): a line known from one batch size is
  only a guess, and time per sample that grows with the batch makes it promise too much. Each
  further move in the same direction may go twice as far, so the split approaches the balance
  from one side instead of crossing it. Moving back needs two decisions in a row that ask for
  it, and is halved. A step too short to beat the dead-band doubles until it does. Moves are
  also limited (``max_move``), and a rank whose speed changes has its stale measurements
  dropped, so the split follows a change within a few decisions and then stays put.

The dynamic policy also counts what a rank costs the exchange (trainer/balance/cost.py): it
measures each active set's per-step overhead and solves for the active set and the split
together; a change of active set is taken whole (a rank left with one sample would still pay
the exchange). A benched rank's probes (trainer/step/exchange.py) arrive as its compute seconds
at a share of 0 and keep its line current, so it rejoins when it pays.

Rank 0 owns the ``Balancer``: it calls ``observe`` every step with every rank's local batch and
compute seconds, and ``decide`` on rebalance steps; the trainer broadcasts the new split and
applies it at the next step boundary on every rank. Nothing here touches torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from profiles.user_errors import UsageError
from trainer.balance.config import BalancerConfig, Decision
from trainer.balance.cost import ExchangeTimes, active_reason, best_plan, plan_of, probe_batch
from trainer.balance.fit import RankTimes
from trainer.balance.passes import (
    PassCost,
    measured_seconds,
    min_max_costs,
    pass_costs,
    passes,
    per_pass,
)
from trainer.balance.reasons import move_reason
from trainer.balance.solve import (
    LinearFit,
    equal_split,
    min_max_split,
    proportional_split,
    rms,
    round_between,
    round_split,
    validate_split,
)
from trainer.balance.verdict import DecisionJudge

__all__ = ["Balancer", "BalancerConfig", "Decision", "LinearFit", "equal_split", "min_max_split",
           "proportional_split", "round_split", "validate_split"]


NOISE_Z = 1.0
"""The dead-band adds this many typical relative standard errors of an estimate."""
DRIFT_Z = 1.5
"""...and this many typical window-to-window drifts (combined in quadrature). A gain compares
two ranks whose speeds both wander, about √2 ≈ 1.4 times one rank's drift."""
MIN_DAMPING = 1 / 16
"""Smallest fraction of the solver's proposed move taken after repeated reversals."""
SETTLE_STEPS = 5
"""Steps left out of the first window: a fresh process runs its first few steps slower
(allocator growth, first touch of memory), and they would read as an imbalance."""
FIRST_MOVE = 0.5
"""Fraction of the solver's proposed move taken by the first move after the start or after a
rank's speed changed (each later move in the same direction doubles it, up to 1)."""


class Balancer:
    """Rank 0's balancer: collects per-rank timings and, for ``dynamic``, re-plans the split."""

    def __init__(self, config: BalancerConfig, split: tuple[int, ...]) -> None:
        self.config = config
        self._check_split(split)
        self._split = tuple(split)
        self._ranks = [RankTimes() for _ in range(config.world_size)]
        self._decisions = 0
        self._damping = FIRST_MOVE
        self._last_move: tuple[int, ...] | None = None
        self._wants_back = False
        self._settling = SETTLE_STEPS
        self._exchange = ExchangeTimes(links=config.link_mbit, world=config.exchange_world)
        self._judge = DecisionJudge(config.rebalance_every)

    @property
    def split(self) -> tuple[int, ...]:
        """The current split: the local batch of every rank."""
        return self._split

    def _check_split(self, split: Sequence[int]) -> None:
        cfg = self.config
        validate_split(split, cfg.global_batch, cfg.world_size, allow_zero=cfg.allow_zero)
        for rank, b in enumerate(split):
            cap = cfg.max_batch[rank] if cfg.max_batch is not None else None
            if cap is not None and b > cap:
                raise UsageError(f"rank {rank}'s share {b} exceeds its max batch {cap}")
            if 0 < b < cfg.min_batch:
                raise UsageError(f"rank {rank}'s share {b} is below the min batch {cfg.min_batch}")

    # -- measurements -------------------------------------------------------------------

    def observe(self, local_batches: Sequence[int], compute_s: Sequence[float]) -> None:
        """Record one step: every rank's local batch and forward+backward seconds.

        Call it on rank 0 every step, with the times gathered from all ranks. The first
        ``SETTLE_STEPS`` steps count for ``capacities`` but not for decisions; non-finite or
        negative times are ignored.
        """
        n = self.config.world_size
        if len(local_batches) != n or len(compute_s) != n:
            raise ValueError(
                f"observe() needs {n} local batches and {n} times, "
                f"got {len(local_batches)} and {len(compute_s)}"
            )
        for rank, (b, t) in enumerate(zip(local_batches, compute_s, strict=True)):
            if b == 0 and math.isfinite(t) and t > 0:  # a benched rank's probe: one pass
                cfg = self.config
                self._ranks[rank].add(
                    probe_batch(cfg.global_batch, cfg.world_size, self._micro(rank)), float(t))
                continue
            n = passes(int(b), self._micro(rank))
            if math.isfinite(t) and t >= 0 and n > 0:  # fitted per pass (passes.py)
                self._ranks[rank].add(per_pass(int(b), self._micro(rank)), float(t) / n)

    def observe_exchange(self, split: Sequence[int], exchange_s: Sequence[float]) -> None:
        """Record one step's exchange under ``split``, the split it ran with: the least of the
        active ranks' seconds in it after their own compute — the last rank to arrive waited
        for nobody — over the ranks that measured it."""
        # 0: not measured (a GPU rank's host clock cannot see its queued collectives).
        times = [t for r, b in enumerate(split) if b > 0
                 if math.isfinite(t := exchange_s[r]) and t > 0]
        if times:
            self._exchange.add(tuple(r for r, b in enumerate(split) if b > 0), min(times))

    def observe_step(self, split: Sequence[int], step_s: float) -> None:
        """Record one step's wall seconds under ``split`` (rank 0's, which waits for every
        rank): the measurement every decision is judged by (trainer/balance/verdict.py)."""
        self._judge.observe(split, step_s)

    def capacities(self) -> tuple[float | None, ...]:
        """Per-rank samples/s at the most recently measured batch (None where unknown).

        For ``proportional``: run a few warm-up steps, ``observe`` them, then
        ``proportional_split(capacities(), B)``.
        """
        return tuple(r.capacity() for r in self._ranks)

    # -- decisions ------------------------------------------------------------------------

    def decide(self, step: int) -> Decision | None:
        """Maybe re-plan the split (rank 0, every ``rebalance_every`` steps).

        ``static`` and ``proportional`` never change the split (None). ``dynamic`` returns a
        ``Decision`` and adopts its split when the predicted gain beats the threshold.
        """
        self._decisions += 1
        now = self._decisions
        cfg = self.config
        anchors = [self._anchor(r) for r in range(cfg.world_size)]
        notes = self._fold_windows(now, anchors)
        if cfg.policy != "dynamic":
            return None
        if notes:  # a rank changed speed: the splits measured before say nothing now
            self._judge.forget()
        undone = self._judged(step, now)
        if undone is not None:
            return undone
        micro = [self._micro(r) for r in range(cfg.world_size)]
        costs = pass_costs(self._ranks, now, anchors, micro)
        if costs is None:
            return None
        old = self._split
        times = tuple(measured_seconds(self._ranks[r], b, micro[r]) or costs[r].seconds(b)
                      for r, b in enumerate(old))
        slowest = max(costs[r].seconds(b) for r, b in enumerate(old))
        if slowest <= 0:
            return None
        switched = self._switch_active(costs, old, times, (step, notes))
        if switched is not None:
            self._judge.start_trial(step, old, switched.split, switched.predicted_gain)
            return switched
        target = self._target(costs)
        delta = [t - o for t, o in zip(target, old, strict=True)]
        reverses = (self._last_move is not None
                    and sum(d * p for d, p in zip(delta, self._last_move, strict=True)) < 0)
        damping = self._next_damping(reverses)
        dead_band = self._dead_band(old)

        def gain_of(split: tuple[int, ...]) -> float:
            return 1 - max(costs[r].seconds(b) for r, b in enumerate(split)) / slowest

        # Hysteresis in time: a move back is made only when two decisions in a row ask for
        # it (beyond the dead-band), so one noisy window cannot swing the split to and fro.
        wanted_back, self._wants_back = self._wants_back, False
        if reverses and not wanted_back:
            self._wants_back = gain_of(target) > dead_band
            return None
        move = self._paying_step(old, target, damping, gain_of, dead_band)
        if move is None or self._judge.refuses(old, move[0], now):
            return None
        new, gain, self._damping = move
        self._judge.start_trial(step, old, new, gain)
        self._last_move = tuple(n - o for n, o in zip(new, old, strict=True))
        self._split = new
        why = move_reason(step, times, (old, new, target), notes, costs)
        return Decision(previous=old, split=new, predicted_gain=gain, times=times, reason=why,
                        **self._active_figures(old, new, costs))

    def _active_figures(self, old: tuple[int, ...], new: tuple[int, ...],
                        costs: list[PassCost]) -> dict[str, Any]:
        """A move that gives a rank a share of 0 (or one back) changes the active set: its
        event carries the cost model's compute and exchange seconds before and after, as a
        switch of active set does (docs/events.md); a move of samples carries none."""
        if [b > 0 for b in old] == [b > 0 for b in new]:
            return {}
        before, after = plan_of(old, costs, self._exchange), plan_of(new, costs, self._exchange)
        return {"compute_s": (before.compute_s, after.compute_s),
                "exchange_s": (before.exchange_s, after.exchange_s)}

    def _judged(self, step: int, now: int) -> Decision | None:
        """The decision the measurements make (trainer/balance/verdict.py): the last move
        undone, or a return to a faster split measured recently; None when they agree."""
        old = self._split
        after = [measured_seconds(self._ranks[r], b, self._micro(r)) for r, b in enumerate(old)]
        verdict = self._judge.judge(old, self._dead_band(old), now, after)
        if verdict is None:
            return None
        self._split = verdict.split
        self._damping, self._last_move, self._wants_back = FIRST_MOVE, None, False
        times = tuple(measured_seconds(self._ranks[r], b, self._micro(r)) or 0.0
                      for r, b in enumerate(old))
        return Decision(previous=old, split=verdict.split, predicted_gain=verdict.measured_gain,
                        times=times, reason=f"step {step}: {verdict.reason}")

    def _paying_step(self, old: tuple[int, ...], target: tuple[int, ...], damping: float,
                     gain_of: Callable[[tuple[int, ...]], float], dead_band: float,
                     ) -> tuple[tuple[int, ...], float, float] | None:
        """The damped step toward ``target`` if its gain beats the dead-band; else the smallest
        longer one that does (doubling the damping, up to the whole way), so an imbalance is not
        left standing because half or a quarter of its correction would fall inside the
        dead-band. The new split, its gain and the damping it took; None if no step pays."""
        while True:
            new = self._limited(old, target, damping)
            gain = gain_of(new)
            if new != old and gain > dead_band:
                return new, gain, damping
            if damping >= 1:
                return None
            damping = min(damping * 2, 1.0)

    def _switch_active(self, costs: list[PassCost], old: tuple[int, ...],
                       times: tuple[float, ...], when: tuple[int, list[str]]) -> Decision | None:
        """The active set and split with the least predicted step time, compute and exchange
        counted, when it is another active set and beats the dead-band; taken whole."""
        cfg = self.config
        if not cfg.allow_zero:
            return None
        current = plan_of(old, costs, self._exchange)
        best = best_plan(costs, cfg.global_batch, cfg.max_batch, self._exchange, current.active)
        if best is None or best.active == current.active or current.total_s <= 0:
            return None
        if self._judge.refuses(old, best.split, self._decisions):
            return None
        gain = 1 - best.total_s / current.total_s
        if gain <= self._dead_band(old):
            return None
        self._split = best.split
        self._damping, self._last_move, self._wants_back = FIRST_MOVE, None, False
        step, notes = when
        reason = "; ".join([*notes, active_reason(current, best, cfg.sharded)
                            + f" at step {step}"])
        return Decision(previous=old, split=best.split, predicted_gain=gain, times=times,
                        reason=reason, compute_s=(current.compute_s, best.compute_s),
                        exchange_s=(current.exchange_s, best.exchange_s))

    def _fold_windows(self, now: int, anchors: list[int]) -> list[str]:
        """Fold each rank's window into its time model; a note per rank that changed speed."""
        if self._settling:  # the run's first steps: leave them out when enough others remain
            for times_r in self._ranks:
                del times_r.window[: max(0, min(self._settling, len(times_r.window) - 3))]
            self._settling = 0
        notes = []
        for rank, times_r in enumerate(self._ranks):
            ratio = times_r.fold(now, self.config.smoothing, anchors[rank])
            if ratio is not None:
                # Fresh start for the step-size control too: the old moves no longer apply.
                self._damping, self._last_move = FIRST_MOVE, None
                notes.append(f"rank {rank} changed speed (x{ratio:.2f})")
        return notes

    def _target(self, costs: list[PassCost]) -> tuple[int, ...]:
        """The split with the least slowest-rank time under the fitted costs."""
        cfg = self.config
        if cfg.micro_batch is None and not cfg.allow_zero:  # one pass per share: linear times
            return min_max_split([c.line for c in costs], cfg.global_batch,
                                 min_batch=cfg.lower_bound, max_batch=cfg.max_batch)
        # Within the active set: a benched rank comes back only by ``_switch_active``, which
        # counts what it adds to the exchange.
        caps = [0 if b == 0 else (cfg.max_batch[r] if cfg.max_batch is not None else None)
                for r, b in enumerate(self._split)]
        return min_max_costs(costs, cfg.global_batch, min_batch=cfg.lower_bound, max_batch=caps)

    def _next_damping(self, reverses: bool) -> float:
        """How far toward the target this move goes."""
        if self._last_move is None:  # first move since the start or a speed change
            return FIRST_MOVE
        if reverses:  # crossed the balance point: shorter steps from here on
            return max(self._damping / 2, MIN_DAMPING)
        return min(self._damping * 2, 1.0)  # still short of it: the model under-promises

    def _dead_band(self, split: tuple[int, ...]) -> float:
        """The threshold plus the typical rank's noise (its estimate's standard error, and the
        drift from window to window, which the next windows will show too), so that noise
        alone (a busy machine) does not move shares back and forth."""
        errors = [t.error_at(b) for t, b in zip(self._ranks, split, strict=True)]
        drifts = [t.drift for t in self._ranks]
        return self.config.threshold + math.hypot(NOISE_Z * rms(errors), DRIFT_Z * rms(drifts))

    def _micro(self, rank: int) -> int | None:
        return self.config.micro_batch[rank] if self.config.micro_batch is not None else None

    def _anchor(self, rank: int) -> int:
        """The per-pass batch a rank's line is anchored at: its current share's, or, sitting
        out at 0, the last one it was measured at."""
        b = self._split[rank]
        return per_pass(b, self._micro(rank)) if b else (self._ranks[rank].last_batch or 0)

    def _limited(
        self, old: tuple[int, ...], target: tuple[int, ...], damping: float
    ) -> tuple[int, ...]:
        """Go ``damping`` of the way to ``target``, moving at most ``max_move·B`` samples."""
        moved = sum(max(t - o, 0) for t, o in zip(target, old, strict=True))
        if moved == 0:
            return old
        allowed = min(self.config.max_move * self.config.global_batch, damping * moved)
        if allowed >= moved:
            return target
        if allowed < 1:
            return old
        f = allowed / moved
        cont = [o + f * (t - o) for t, o in zip(target, old, strict=True)]
        return round_between(cont, self.config.global_batch, old, target)

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly, as plain Python types (for checkpoints)."""
        return {
            "version": 1,
            "policy": self.config.policy,
            "split": list(self._split),
            "decisions": self._decisions,
            "damping": self._damping,
            "last_move": None if self._last_move is None else list(self._last_move),
            "wants_back": self._wants_back,
            "settling": self._settling,
            "ranks": [r.to_state() for r in self._ranks],
            "exchange": self._exchange.to_state(),
            "verdict": self._judge.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``; raises ``UsageError`` if it does not fit this run."""
        if state.get("version") != 1:
            raise UsageError(f"balancer state version {state.get('version')!r} is not supported")
        ranks = state["ranks"]
        if len(ranks) != self.config.world_size:
            raise UsageError(
                f"the checkpoint's balancer state is for {len(ranks)} ranks but this run has "
                f"{self.config.world_size}: resume with the same number of ranks"
            )
        split = tuple(int(b) for b in state["split"])
        self._check_split(split)
        self._split = split
        self._decisions = int(state["decisions"])
        self._damping = float(state["damping"])
        last = state["last_move"]
        self._last_move = None if last is None else tuple(int(d) for d in last)
        self._wants_back = bool(state.get("wants_back", False))  # absent in older checkpoints
        self._settling = int(state.get("settling", 0))
        self._ranks = [RankTimes.from_state(raw) for raw in ranks]
        self._exchange = ExchangeTimes.from_state(state.get("exchange"), self.config.link_mbit,
                                                  self.config.exchange_world)
        self._judge.load_state_dict(state.get("verdict"))  # absent in older checkpoints
