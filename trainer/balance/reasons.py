"""A balancer's decision in words: the ``reason`` of a rebalance event.

trainer/balance/balancer.py decides; this says why, for the console and ``corral report``."""

from __future__ import annotations

from trainer.balance.passes import PassCost


def sit_out_reason(idle: list[int], cost: PassCost, share: int) -> str:
    """Why ranks ``idle`` get a share of 0: the fixed per-step part of the first one's time
    (at its old ``share``) is what more ranks cannot divide."""
    total = cost.seconds(share)
    fixed = max(total - cost.line.slope * share, 0.0)
    names = f"rank{'s' if len(idle) > 1 else ''} {','.join(map(str, idle))}"
    return (f"{names} sit out (share 0): the step is dominated by fixed per-step cost "
            f"({fixed:.3f} s of rank {idle[0]}'s {total:.3f} s does not depend on its samples), "
            "so fewer ranks are faster")


def move_reason(
    step: int,
    times: tuple[float, ...],
    splits: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
    notes: list[str],
    costs: list[PassCost],
) -> str:
    """The decision in words; ``splits`` is (old, new, target)."""
    old, new, target = splits
    slow = max(range(len(times)), key=lambda r: times[r])
    fast = min(range(len(times)), key=lambda r: times[r])
    moved = sum(max(n - o, 0) for n, o in zip(new, old, strict=True))
    parts = [
        *notes,
        f"rank {slow} slowest ({times[slow]:.3f} s vs {times[fast]:.3f} s on "
        f"rank {fast}) at step {step}",
        f"moved {moved} samples",
    ]
    if new != target:
        parts.append(f"towards {','.join(map(str, target))} (move limited)")
    idle = [r for r, b in enumerate(new) if b == 0 and old[r] > 0]
    if idle:
        parts.append(sit_out_reason(idle, costs[idle[0]], old[idle[0]]))
    return "; ".join(parts)
