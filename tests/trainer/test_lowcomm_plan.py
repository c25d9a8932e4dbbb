"""The plan of a local-exchange run: islands, inner steps by speed, the round length."""

from __future__ import annotations

import pytest
from trainer_runs import trainer_main

from trainer.lowcomm.plan import (
    MAX_ROUND_STEPS,
    PLANNED_SHARE,
    RoundPlan,
    bytes_per_sample,
    chosen_round_steps,
    exchange_seconds,
    exposed_round_steps,
    inner_steps,
    island_split,
    islands_of,
    next_round_steps,
    plan_round,
    round_steps_for,
)


def test_islands_are_ordered_by_their_lowest_rank() -> None:
    assert islands_of([1, 1, 0]) == ((0, 1), (2,))
    assert islands_of([("0", "a"), ("1", "b"), ("0", "a")]) == ((0, 2), (1,))


def test_an_islands_shares_are_the_split_scaled_to_the_whole_batch() -> None:
    assert island_split((32, 8, 24), (1, 2), 64) == (16, 48)
    assert island_split((32, 0, 0), (1, 2), 64) == (32, 32)  # no share given: equal


def test_inner_steps_follow_speed_and_sum_to_the_round() -> None:
    assert inner_steps([2.0, 1.0], 12) == (8, 4)  # twice as fast: twice the steps
    assert sum(inner_steps([3.0, 1.0, 1.7], 25)) == 25


def test_a_round_takes_consecutive_batches_and_the_last_round_what_is_left() -> None:
    plan = plan_round(step=8, total_steps=100, round_steps=4, speeds=[1.0, 1.0])
    assert plan == RoundPlan(first_step=9, steps=(4, 4))
    assert list(plan.global_steps(0)) == [9, 10, 11, 12]
    assert list(plan.global_steps(1)) == [13, 14, 15, 16]
    last = plan_round(step=95, total_steps=100, round_steps=4, speeds=[3.0, 1.0])
    assert sum(last.steps) == 5 and last.last_step == 100


def test_the_round_is_long_enough_for_the_exchange_to_be_a_small_fraction() -> None:
    # 16 s to exchange, 0.5 s per inner step, at most 5 %: 16·0.95/(0.05·0.5) = 608 -> capped.
    assert round_steps_for(16.0, 0.5, 0.05) == MAX_ROUND_STEPS
    h = round_steps_for(0.8, 0.1, 0.05)
    assert h == 152 and 0.8 / (0.8 + h * 0.1) <= 0.05
    assert round_steps_for(0.0, 0.1, 0.05) == 1


def test_an_overlapped_run_counts_only_what_is_left_exposed_in_its_round_length() -> None:
    # The first round's exchange, waited for: 2 s, behind inner steps of 0.1 s, at most 5 %:
    # the run plans for 4 % (PLANNED_SHARE of it), so that a round's noise stays within 5 %.
    exchange_s, step_s, fraction = 2.0, 0.1, 0.05
    planned = fraction * PLANNED_SHARE
    assert planned == pytest.approx(0.04)
    waited = chosen_round_steps(exchange_s, step_s, fraction, overlap=False)
    hidden = chosen_round_steps(exchange_s, step_s, fraction, overlap=True)
    assert waited == round_steps_for(exchange_s, step_s, planned) == 480

    def exposed_share(h: int) -> float:
        return max(0.0, exchange_s - h * step_s) / (h * step_s)

    # Overlapped, the next round's inner steps carry the exchange: what is left exposed,
    # max(0, 2 s - H x 0.1 s), is within 4 % of the inner steps at H=20, not at 19.
    assert hidden == 20
    assert exposed_share(hidden) <= planned < exposed_share(hidden - 1)
    # Waited for, the same exchange at H=20 would be half the round.
    assert exchange_s / (hidden * step_s + exchange_s) == pytest.approx(0.5)
    # After an overlapped round, what stayed exposed (quantising, the outer step, a wait) is
    # held to the same rule: 0.3 s exposed is 13 % of H=20, so the round is planned for 4 %
    # again: 72 steps, never fewer.
    longer = exposed_round_steps(hidden, 0.3, step_s, fraction)
    assert longer == 72 and 0.3 / (longer * step_s + 0.3) <= planned
    assert 0.3 / ((longer - 1) * step_s + 0.3) > planned
    assert exposed_round_steps(hidden, 0.01, step_s, fraction) == hidden


def test_a_waited_run_lengthens_its_round_when_its_exchange_grows_past_the_rule() -> None:
    # The first round's exchange, 0.6 s behind inner steps of 0.25 s: H=58 plans it at 4 %.
    step_s, fraction = 0.25, 0.05
    first = next_round_steps(None, 0.6, step_s, fraction, overlap=False)
    assert first == round_steps_for(0.6, step_s, fraction * PLANNED_SHARE) == 58
    # A round whose exchange took 0.7 s is 4.6 % at H=58: within the 5 %, the round is kept.
    assert next_round_steps(first, 0.7, step_s, fraction, overlap=False) == first
    # A later round's exchange took 0.9 s (a busier link or host): 5.8 % at H=58. The next
    # round is made long enough to plan it at 4 % again...
    later = next_round_steps(first, 0.9, step_s, fraction, overlap=False)
    assert 0.9 / (first * step_s + 0.9) > fraction
    assert later == 87
    planned = fraction * PLANNED_SHARE
    assert 0.9 / (later * step_s + 0.9) <= planned < 0.9 / ((later - 1) * step_s + 0.9)
    # ...and a quicker exchange afterwards never shortens it.
    assert next_round_steps(later, 0.1, step_s, fraction, overlap=False) == later
    # Overlapped, the first choice counts what the next round leaves exposed, as before.
    assert next_round_steps(None, 2.0, 0.1, fraction, overlap=True) == 20


def test_the_exchange_is_predicted_from_each_islands_link() -> None:
    # 100 MB of parameters, two islands, the slower on 50 Mbit/s: 100e6·8/50e6 = 16 s.
    assert exchange_seconds(100_000_000, [1000.0, 50.0]) == pytest.approx(16.0)
    assert exchange_seconds(100_000_000, [1000.0]) == 0.0
    assert bytes_per_sample(1000, 2, 10) == 100.0


@pytest.mark.parametrize(("argv", "message"), [
    (["--exchange", "local", "--round-exchange", "1.5"], "--round-exchange 1.5 must be below 1"),
    (["--exchange", "local", "--outer-momentum", "1"], "--outer-momentum 1.0 must be in [0, 1)"),
    (["--exchange", "lokal"], "invalid choice"),
])
def test_bad_settings_are_named(argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert trainer_main(argv, monkeypatch) == 2
    assert message in capsys.readouterr().err


def test_check_says_what_each_host_does_under_each_mode() -> None:
    from trainer.balance.estimate import HostSpeed
    from trainer.lowcomm.modes import host_modes, local_plan, modes_text

    gbit, wifi = 1e9 / 8, 50e6 / 8
    hosts = [HostSpeed(name=n, ranks=1, fixed_s=0.01, per_sample_s=0.002, link_bytes_per_s=link)
             for n, link in (("a", gbit), ("b", gbit), ("laptop", wifi))]
    # 100 MB of parameters: exact mode's ring over Wi-Fi would take 21 s a step.
    modes = host_modes(hosts, 256, 100e6, 0.05)
    assert modes is not None
    laptop = modes[2]
    assert not laptop.exact_pays
    plan = local_plan(hosts, 256, 100e6, 0.05)
    assert plan.exchange_s == pytest.approx(2 * 2 / 3 * 100e6 * 8 / 50e6)
    assert plan.round_steps == MAX_ROUND_STEPS and plan.exchange_s / plan.round_s < 0.08
    assert laptop.local_samples_per_s > 2.5 * laptop.exact_samples_per_s
    assert laptop.local_adds_samples_per_s == pytest.approx(laptop.local_samples_per_s / 3)
    text = modes_text(laptop, plan)
    assert "exact: sits out" in text and "local (approximate): trains" in text
    # A missing fact: no modes (the exact estimate names what to fix).
    assert host_modes([*hosts[:2], HostSpeed(name="x", ranks=1, fixed_s=None,
                                             per_sample_s=None, link_bytes_per_s=gbit)],
                      256, 100e6, 0.05) is None



def test_check_says_what_each_exchange_setting_costs_and_gives() -> None:
    from trainer.balance.estimate import HostSpeed
    from trainer.lowcomm.modes import local_plan, settings_text

    gbit, wifi = 1e9 / 8, 50e6 / 8
    hosts = [HostSpeed(name=n, ranks=1, fixed_s=0.01, per_sample_s=0.002, link_bytes_per_s=link)
             for n, link in (("a", gbit), ("laptop", wifi))]
    plain = local_plan(hosts, 256, 40e6, 0.05)  # 40 MB over Wi-Fi: 6.4 s a round
    assert plain.exchange_s == pytest.approx(40e6 * 8 / 50e6)
    int8 = local_plan(hosts, 256, 40e6, 0.05, compression="int8")
    int4 = local_plan(hosts, 256, 40e6, 0.05, compression="int4")
    # A byte a value plus a float32 step per 256 (whole blocks), against 4: about 4x (8x) less.
    assert int8.exchange_s == pytest.approx(plain.exchange_s * (1 + 4 / 256) / 4, rel=1e-4)
    assert int4.exchange_s == pytest.approx(plain.exchange_s * (0.5 + 4 / 256) / 4, rel=1e-4)
    assert int4.round_steps < int8.round_steps < plain.round_steps  # shorter rounds pay
    # Overlapped: the round need only be about as long as its exchange, which it hides but
    # for at most round_exchange of the inner steps.
    hidden = local_plan(hosts, 256, 40e6, 0.05, compression="int8", overlap=True)
    assert hidden.round_steps < int8.round_steps
    inner_s = hidden.round_steps * (0.01 + 0.002 * 256)  # equal hosts: one step each
    assert 0 <= hidden.round_s - inner_s <= 0.05 * inner_s
    assert hidden.samples_per_s > int8.samples_per_s * 0.99
    text = settings_text(hosts[1], hosts, 256, 40e6, 0.05)
    assert "`laptop` exchange per round" in text and "none 6.40 s" in text
    assert "int8+overlap" in text and f"(H={hidden.round_steps})" in text


def test_an_island_schedule_gives_each_rounds_islands_and_those_dropped() -> None:
    from profiles.user_errors import UsageError
    from trainer.lowcomm.schedule import islands_at, parse_schedule

    schedule = parse_schedule("0:0,1,2; 6:0,1,2,3;22:0,~1,3;28:0,3")
    assert islands_at(schedule, 0, 4) == (frozenset({0, 1, 2}), frozenset())
    assert islands_at(schedule, 14, 4) == (frozenset({0, 1, 2, 3}), frozenset())
    assert islands_at(schedule, 22, 4) == (frozenset({0, 1, 3}), frozenset({1}))
    assert islands_at(schedule, 40, 4) == (frozenset({0, 3}), frozenset())
    assert islands_at((), 40, 2) == (frozenset({0, 1}), frozenset())  # none given: all
    # An island outside the round takes no batch: the others' lie where they would without it.
    plan = plan_round(step=22, total_steps=100, round_steps=2, speeds=[1.0, 1.0, 0.0, 1.0],
                      active=3)
    assert plan.steps == (2, 2, 0, 2) and list(plan.global_steps(3)) == [27, 28]
    for bad, message in (("6-0,1", "is not STEP:ISLANDS"), ("6:0;6:1", "steps must increase"),
                         ("0:0,4", "names island 4, the run has 4")):
        with pytest.raises(UsageError, match=message):
            islands_at(parse_schedule(bad), 10, 4)
