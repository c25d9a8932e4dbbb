"""The balancer's settings (``BalancerConfig``, checked once) and what a decision holds
(``Decision``); the policies themselves are in trainer/balance/balancer.py."""

from __future__ import annotations

from dataclasses import dataclass

from profiles.user_errors import UsageError
from trainer.settings.run_settings import POLICIES, Policy
from trainer.settings.train_config import TrainConfig


@dataclass(frozen=True, kw_only=True)
class BalancerConfig:
    """How rank 0 shares the global batch among the ranks."""

    policy: Policy
    """``static`` (never change), ``proportional`` (set once from capacities) or ``dynamic``
    (refit and re-solve every ``rebalance_every`` steps)."""
    global_batch: int
    """Samples per optimizer step across all ranks (B); every split sums to it."""
    world_size: int
    """Number of ranks; every split has one entry per rank."""
    rebalance_every: int = 10
    """Steps between two dynamic decisions (the trainer calls ``decide`` on these steps)."""
    min_batch: int = 1
    """Smallest local batch a rank may get (the lower bound is 0 instead when ``allow_zero``)."""
    allow_zero: bool = False
    """Let a rank get 0 samples (it still joins every all-reduce, contributing nothing)."""
    max_batch: tuple[int | None, ...] | None = None
    """Per-rank largest local batch (a hard share cap), None entries for no cap; None: no caps."""
    micro_batch: tuple[int | None, ...] | None = None
    """Per-rank largest pass (memory caps): a share of b costs ceil(b/m) passes; None: one
    pass per share. Shares are not capped by it."""
    link_mbit: tuple[float, ...] | None = None
    """Each rank's link in Mbit/s (0: not known); None: none known. An active set's exchange,
    before it is measured, is predicted from its slowest link (trainer/balance/cost.py)."""
    sharded: bool = False
    """Sharded state (``shard_state``): every rank holds a slice and so takes part in every
    step's exchange, benched or not; benching saves only compute (trainer/balance/cost.py)."""
    threshold: float = 0.03
    """Act only when the predicted relative reduction of the slowest rank's time exceeds this."""
    max_move: float = 0.25
    """Most samples that may change rank in one decision, as a fraction of the global batch."""
    smoothing: float = 0.5
    """Weight a batch size's time estimate keeps when a newer window's median arrives
    (0: only the newest window counts). A jump beyond 20 % replaces the estimate."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise UsageError(f"unknown policy {self.policy!r}: choose one of {', '.join(POLICIES)}")
        if self.world_size < 1:
            raise UsageError(f"world size must be at least 1, got {self.world_size}")
        if self.global_batch < 1:
            raise UsageError(f"global batch must be at least 1, got {self.global_batch}")
        if self.link_mbit is not None and len(self.link_mbit) != self.world_size:
            raise UsageError(f"{len(self.link_mbit)} link speeds for {self.world_size} ranks")
        if self.rebalance_every < 1:
            raise UsageError(f"rebalance every must be at least 1 step, got {self.rebalance_every}")
        if self.min_batch < 0 or (self.min_batch == 0 and not self.allow_zero):
            raise UsageError(
                f"min batch must be at least 1 (0 only with zero shares allowed), "
                f"got {self.min_batch}"
            )
        if self.lower_bound * self.world_size > self.global_batch:
            raise UsageError(
                f"a global batch of {self.global_batch} cannot give {self.world_size} ranks at "
                f"least {self.lower_bound} samples each: raise --global-batch"
            )
        if self.max_batch is not None:
            if len(self.max_batch) != self.world_size:
                raise UsageError(
                    f"max batch has {len(self.max_batch)} entries but the run has "
                    f"{self.world_size} ranks: give one cap per rank"
                )
            for rank, cap in enumerate(self.max_batch):
                if cap is not None and cap < max(self.lower_bound, 1):
                    raise UsageError(
                        f"rank {rank}'s max batch {cap} is below the smallest allowed share "
                        f"{max(self.lower_bound, 1)}"
                    )
            room = sum(self.global_batch if c is None else c for c in self.max_batch)
            if room < self.global_batch:
                raise UsageError(
                    f"the per-rank max batches add up to {room}, less than the global batch "
                    f"{self.global_batch}: lower the global batch or raise the caps"
                )
        if not 0 <= self.threshold < 1:
            raise UsageError(f"threshold must be in [0, 1), got {self.threshold}")
        if not 0 < self.max_move <= 1:
            raise UsageError(f"max move must be in (0, 1], got {self.max_move}")
        if not 0 <= self.smoothing < 1:
            raise UsageError(f"smoothing must be in [0, 1), got {self.smoothing}")

    @property
    def lower_bound(self) -> int:
        """The smallest local batch the balancer will give a rank."""
        return 0 if self.allow_zero else self.min_batch

    @property
    def exchange_world(self) -> int | None:
        """Sharded state: the world, every rank of which is in every step's exchange; None:
        the active ranks alone are (trainer/balance/cost.py, ``exchange_members``)."""
        return self.world_size if self.sharded else None


@dataclass(frozen=True, kw_only=True)
class Decision:
    """A change of split made by ``Balancer.decide`` (becomes a ``rebalance`` event)."""

    previous: tuple[int, ...]
    """The split before the decision."""
    split: tuple[int, ...]
    """The new split (sums to the global batch)."""
    reason: str
    """One line saying why, for people reading the event log."""
    predicted_gain: float
    """Predicted relative reduction of the slowest rank's compute time (0.12 = 12 %)."""
    times: tuple[float, ...]
    """Smoothed per-rank compute seconds per step measured under ``previous``."""
    compute_s: tuple[float, float] | None = None
    """A change of active set only: the cost model's compute seconds of the step (its slowest
    active rank) before and after it."""
    exchange_s: tuple[float, float] | None = None
    """A change of active set only: the cost model's exchange seconds of the step before and
    after it."""


def rank0_config(config: TrainConfig, world: int, max_batch: tuple[int | None, ...],
                 micro_batch: tuple[int | None, ...],
                 link_mbit: tuple[float, ...] | None = None) -> BalancerConfig:
    """The trainer's balancer settings. Memory caps learnt from stored profiles (``max_batch``)
    bind every later split; they set micro-batches, not shares. A share of 0 is allowed: a rank
    whose samples or exchange would slow the step sits out of it (trainer/step/exchange.py);
    under sharded state its exchange stays (``sharded``)."""
    return BalancerConfig(
        policy=config.policy, global_batch=config.global_batch, world_size=world,
        rebalance_every=config.rebalance_every, threshold=config.rebalance_threshold,
        max_batch=max_batch if any(m is not None for m in max_batch) else config.max_batch,
        micro_batch=micro_batch if any(m is not None for m in micro_batch) else None,
        allow_zero=True, link_mbit=link_mbit, sharded=config.shard_state != "replicate")
