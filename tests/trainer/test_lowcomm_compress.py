"""The compressed outer exchange's arithmetic (trainer/lowcomm/compress.py), on tensors: what a
user relies on when turning ``outer_compression`` on is that every value arrives within half a
quantisation step, that nothing is lost for good (error feedback), that every island decodes
the same sum, and that the bytes counted are the bytes sent."""

from __future__ import annotations

import pytest
import torch

from trainer.lowcomm.compress import (
    ErrorFeedback,
    dequantise,
    gathered_sum,
    payload_of,
    qmax,
    quantise,
)
from trainer.lowcomm.plan import hidden_round_steps
from trainer.lowcomm.sizes import BLOCK, payload_bytes, sent_bytes


@pytest.mark.parametrize("bits", [8, 4])
def test_every_value_comes_back_within_half_a_step_of_its_block(bits: int) -> None:
    torch.manual_seed(0)
    # Blocks of very different magnitudes, a zero block and a length that is not whole blocks.
    values = torch.cat([torch.randn(BLOCK) * 1e-4, torch.zeros(BLOCK), torch.randn(BLOCK) * 30,
                        torch.randn(100)])
    q = quantise(values, bits)
    back = dequantise(q)
    assert back.shape == values.shape
    padded = torch.zeros(q.steps.numel() * BLOCK)
    padded[:values.numel()] = values
    blocks = padded.view(-1, BLOCK)
    # The step of each block is its largest magnitude over the largest code...
    assert torch.equal(q.steps, blocks.abs().amax(dim=1) / qmax(bits))
    # ...and no value is further than half a step from the truth (float32 rounding aside).
    error = (back - values).abs()
    bound = q.steps.repeat_interleave(BLOCK)[:values.numel()] / 2
    assert bool((error <= bound * (1 + 1e-5) + 1e-12).all())
    assert bool((back[BLOCK:2 * BLOCK] == 0).all())  # a zero block stays exactly zero
    assert q.codes.dtype == torch.uint8 and q.codes.numel() == q.steps.numel() * BLOCK * bits // 8


@pytest.mark.parametrize("bits", [8, 4])
def test_error_feedback_makes_the_sent_sum_converge_to_the_true_sum(bits: int) -> None:
    torch.manual_seed(1)
    feedback = ErrorFeedback(1000, torch.device("cpu"))
    true_sum, sent_sum = torch.zeros(1000), torch.zeros(1000)
    gaps = []
    for _ in range(200):
        change = torch.randn(1000) * 0.01
        true_sum += change
        sent_sum += dequantise(feedback.quantise(change, bits))
        gaps.append(float((true_sum - sent_sum).abs().max()))
    # What is still owed is exactly the residual, and it stays below one round's half step:
    # the gap does not grow with the rounds (without feedback it would, as a random walk).
    assert torch.allclose(true_sum - sent_sum, feedback.residual, atol=1e-5)
    assert max(gaps[100:]) <= max(gaps[:100]) * 1.5
    plain = torch.zeros(1000)
    torch.manual_seed(1)
    truth = torch.zeros(1000)
    for _ in range(200):
        change = torch.randn(1000) * 0.01
        truth += change
        plain += dequantise(quantise(change, bits))
    assert gaps[-1] < float((truth - plain).abs().max())


@pytest.mark.parametrize("bits", [8, 4])
def test_every_island_decodes_the_same_sum_in_the_same_order(bits: int) -> None:
    torch.manual_seed(2)
    changes = [torch.randn(3 * BLOCK + 7) * scale for scale in (1.0, 1e-3, 50.0)]
    payloads = [payload_of(quantise(c, bits)) for c in changes]
    total = gathered_sum(payloads, changes[0].numel(), bits)
    again = gathered_sum([p.clone() for p in payloads], changes[0].numel(), bits)
    assert torch.equal(total, again)  # bit for bit: the same on every island, every run
    numel = changes[0].numel()
    expected = sum((dequantise(quantise(c, bits)) for c in changes), torch.zeros(numel))
    assert torch.equal(total, expected)
    assert payloads[0].numel() == payload_bytes(numel, "int8" if bits == 8 else "int4")


def test_the_bytes_sent_per_setting() -> None:
    n = 1_000_000
    blocks = -(-n // BLOCK)
    # Two islands: a ring all-reduce sends the float32 change once; an all-gather one payload.
    assert sent_bytes(n, "none", 2) == 4 * n
    assert sent_bytes(n, "int8", 2) == blocks * BLOCK + 4 * blocks
    assert sent_bytes(n, "int4", 2) == blocks * BLOCK // 2 + 4 * blocks
    assert sent_bytes(n, "int8", 4) == 3 * (blocks * BLOCK + 4 * blocks)
    assert sent_bytes(n, "int4", 1) == 0
    assert 3.9 < sent_bytes(n, "none", 2) / sent_bytes(n, "int8", 2) < 4.0
    assert 7.5 < sent_bytes(n, "none", 2) / sent_bytes(n, "int4", 2) < 8.0


def test_an_overlapped_round_is_long_enough_to_hide_its_exchange() -> None:
    # A 2 s exchange behind inner steps of 0.1 s: 2 / (1.05 * 0.1) -> 20 steps, whose 2.0 s
    # leave nothing exposed; one step fewer would leave 0.1 s, over 5 % of 1.9 s.
    assert hidden_round_steps(2.0, 0.1, 0.05) == 20
    assert hidden_round_steps(0.0, 0.1, 0.05) == 1
    assert hidden_round_steps(1.0, 0.0, 0.05) == 500


def test_an_overlapped_island_alone_starts_each_round_where_the_waited_exchange_would() -> None:
    # One island: the others' part of the eager estimate is empty, so its estimate is the
    # true average and its start the anchor the synchronous exchange gives, round after round;
    # the anchor itself, one round late, catches up at the last round (no process group:
    # an island alone has none).
    from torch import nn

    from trainer.lowcomm.outer import IslandGroups, OuterStep

    torch.manual_seed(0)
    models = [nn.Linear(5, 3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    steps = [OuterStep(list(m.parameters()), IslandGroups([[0]], 0), lr=0.7, momentum=0.9,
                       overlap=overlap) for m, overlap in zip(models, (False, True), strict=True)]
    moves = [[torch.randn_like(p) * 0.1 for p in models[0].parameters()] for _ in range(4)]
    for index, move in enumerate(moves):
        for model in models:  # the same inner change from each one's start
            with torch.no_grad():
                for p, d in zip(model.parameters(), move, strict=True):
                    p.sub_(d)
        last = index == len(moves) - 1
        for outer in steps:
            outer.step([8], final=last)
        for waited, eager in zip(*(m.parameters() for m in models), strict=True):
            torch.testing.assert_close(eager, waited, rtol=1e-6, atol=1e-7)
    assert steps[1].pending is None and steps[1].start is None
    for waited, eager in zip(steps[0].anchor, steps[1].anchor, strict=True):
        torch.testing.assert_close(eager, waited, rtol=1e-6, atol=1e-7)
