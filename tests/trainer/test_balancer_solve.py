"""Split arithmetic: checking, rounding and the min-max solver (pure, no torch)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from profiles.user_errors import UsageError
from trainer.balance.balancer import (
    LinearFit,
    equal_split,
    min_max_split,
    proportional_split,
    round_split,
    validate_split,
)
from trainer.balance.solve import water_fill


def test_equal_split_spreads_the_remainder_over_the_first_ranks() -> None:
    assert equal_split(32, 1) == (32,)
    assert equal_split(32, 3) == (11, 11, 10)
    assert equal_split(10, 4) == (3, 3, 2, 2)


@pytest.mark.parametrize(
    ("split", "needle"),
    [
        ((24, 7), "sums to 31 but the global batch is 32"),
        ((40, -8), "rank 1's share -8 is negative"),
        ((32, 0), "rank 1's share is 0"),
        ((20, 8, 4), "has 3 entries but the run has 2 ranks"),
        ((16, 16.0), "not a whole number"),
    ],
)
def test_validate_split_names_the_problem(split: tuple[int, ...], needle: str) -> None:
    with pytest.raises(UsageError) as info:
        validate_split(split, 32, 2)
    assert needle in str(info.value)
    assert info.value.exit_code == 2


def test_validate_split_accepts_good_splits_and_allowed_zeros() -> None:
    validate_split((24, 8), 32, 2)
    validate_split((32,), 32, 1)
    validate_split((32, 0), 32, 2, allow_zero=True)


def test_round_split_is_largest_remainder() -> None:
    # 10 * (0.5, 0.3, 0.2) / 1.0 = exact; 10 * thirds = 3.33 each -> one rank gets the extra.
    assert round_split([5, 3, 2], 10) == (5, 3, 2)
    assert sorted(round_split([1, 1, 1], 10)) == [3, 3, 4]
    assert round_split([0.62, 0.38], 8) == (5, 3)  # 4.96 / 3.04


def test_round_split_respects_caps_and_minimum() -> None:
    # Rank 0 wants 90 % but is capped at 40; the rest goes to the others in proportion.
    assert round_split([9, 0.5, 0.5], 100, max_batch=[40, None, None]) == (40, 30, 30)
    # A zero share still gets the minimum.
    assert round_split([1, 0], 10, min_batch=2) == (8, 2)
    # A zero share takes what the capped ranks cannot.
    assert round_split([1, 0], 10, max_batch=[4, None]) == (4, 6)


def test_round_split_rejects_impossible_bounds() -> None:
    with pytest.raises(UsageError, match="add up to 20, less than the global batch 32"):
        round_split([1, 1], 32, max_batch=[10, 10])
    with pytest.raises(UsageError, match="cannot give 3 ranks at least 4 samples"):
        round_split([1, 1, 1], 10, min_batch=4)
    with pytest.raises(UsageError, match="every share is 0"):
        round_split([0, 0], 10)
    with pytest.raises(UsageError, match="non-negative"):
        round_split([1, -1], 10)


@given(
    shares=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=8),
    total=st.integers(0, 5000),
    min_batch=st.integers(0, 3),
    data=st.data(),
)
def test_round_split_sums_exactly_within_bounds(
    shares: list[float], total: int, min_batch: int, data: st.DataObject
) -> None:
    assume(max(shares) > 0 and min_batch * len(shares) <= total)
    caps = data.draw(
        st.lists(
            st.one_of(st.none(), st.integers(min_batch, total)),
            min_size=len(shares),
            max_size=len(shares),
        )
    )
    assume(sum(total if c is None else c for c in caps) >= total)
    split = round_split(shares, total, min_batch=min_batch, max_batch=caps)
    assert sum(split) == total
    assert all(b >= min_batch for b in split)
    assert all(c is None or b <= c for b, c in zip(split, caps, strict=True))


def test_proportional_split_follows_capacities() -> None:
    assert proportional_split([300.0, 100.0], 256) == (192, 64)
    assert proportional_split([3.0, 1.0], 256, max_batch=[150, None]) == (150, 106)
    with pytest.raises(UsageError, match=r"rank 1's capacity 0\.0"):
        proportional_split([1.0, 0.0], 64)


def test_water_fill_matches_the_closed_form_without_bounds() -> None:
    fits = [LinearFit(0.02, 0.001), LinearFit(0.06, 0.003), LinearFit(0.0, 0.002)]
    total = 600
    t_closed = (total + sum(f.intercept / f.slope for f in fits)) / sum(1 / f.slope for f in fits)
    t_star, shares = water_fill(fits, total, [0] * 3, [total] * 3)
    assert t_star == pytest.approx(t_closed)
    assert sum(shares) == pytest.approx(total)
    assert [f.seconds(b) for f, b in zip(fits, shares, strict=True)] == pytest.approx([t_star] * 3)


def test_min_max_split_equalises_finish_times() -> None:
    fits = [LinearFit(0.01, 0.001), LinearFit(0.03, 0.003)]  # rank 1: 3x slower
    split = min_max_split(fits, 512)
    assert sum(split) == 512
    # Continuous optimum b0 = 3B/4 + a/(2c) = 384 + 5 = 389.
    assert split == (389, 123)
    # No other integer split has a smaller slowest time.
    best = min(max(fits[0].seconds(b), fits[1].seconds(512 - b)) for b in range(1, 512))
    assert max(f.seconds(b) for f, b in zip(fits, split, strict=True)) == pytest.approx(best)


def test_min_max_split_re_solves_around_clamped_ranks() -> None:
    fits = [LinearFit(0.0, 0.001), LinearFit(0.0, 0.001), LinearFit(0.0, 0.01)]
    # Rank 0 is capped at 100: the other fast rank takes its place, rank 2 keeps its share of
    # the equal finish time over the unclamped ranks.
    split = min_max_split(fits, 420, max_batch=[100, None, None])
    assert split[0] == 100
    assert sum(split) == 420
    # Unclamped: T = (320) / (1/0.001 + 1/0.01) -> b1 = T/0.001, b2 = T/0.01
    t = 320 / (1000 + 100)
    assert split[1] == pytest.approx(t / 0.001, abs=1)
    assert split[2] == pytest.approx(t / 0.01, abs=1)
    # Minimum: a very slow rank still gets min_batch.
    assert min_max_split([LinearFit(0, 0.001), LinearFit(0, 100.0)], 64, min_batch=4) == (60, 4)


@given(
    fits=st.lists(
        st.tuples(st.floats(0, 1.0), st.floats(1e-5, 1e-1)).map(lambda p: LinearFit(*p)),
        min_size=1,
        max_size=6,
    ),
    total=st.integers(1, 4000),
    data=st.data(),
)
def test_water_fill_meets_the_equal_finish_conditions(
    fits: list[LinearFit], total: int, data: st.DataObject
) -> None:
    n = len(fits)
    lo = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    hi = [data.draw(st.one_of(st.just(total), st.integers(low, max(low, total)))) for low in lo]
    assume(sum(lo) <= total <= sum(hi))
    t_star, shares = water_fill(fits, total, lo, hi)
    assert sum(shares) == pytest.approx(total, abs=1e-6 * total)
    for f, b, low, high in zip(fits, shares, lo, hi, strict=True):
        assert low - 1e-9 <= b <= high + 1e-9
        t = f.seconds(b)
        # Free ranks finish at T*; a rank held at its cap would finish earlier, one held at
        # its minimum later (it cannot give more away).
        if low + 1e-6 < b < high - 1e-6:
            assert t == pytest.approx(t_star, rel=1e-6, abs=1e-9)
        elif b >= high - 1e-6 and high > low:
            assert t <= t_star + 1e-6 * max(1.0, t_star)
        elif b <= low + 1e-6 and high > low:
            assert t >= t_star - 1e-6 * max(1.0, t_star)


@given(
    a=st.tuples(st.floats(0, 0.5), st.floats(0, 0.5)),
    c=st.tuples(st.floats(1e-4, 1e-2), st.floats(1e-4, 1e-2)),
    total=st.integers(2, 300),
)
def test_min_max_split_is_optimal_among_integer_splits(
    a: tuple[float, float], c: tuple[float, float], total: int
) -> None:
    fits = [LinearFit(a[0], c[0]), LinearFit(a[1], c[1])]
    split = min_max_split(fits, total)
    got = max(f.seconds(b) for f, b in zip(fits, split, strict=True))
    best = min(max(fits[0].seconds(b), fits[1].seconds(total - b)) for b in range(1, total))
    assert got == pytest.approx(best, rel=1e-9, abs=1e-12)
