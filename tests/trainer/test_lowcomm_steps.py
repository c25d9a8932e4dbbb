"""An island of one rank (trainer/lowcomm/steps.py): its inner step skips the island's flat
copy of the gradients and must leave the optimizer exactly what the copy left it, so a run's
parameters stay bit for bit those of the replays and resumes that prove the mode."""

from __future__ import annotations

import torch
from torch import nn

from trainer.lowcomm.outer import flat_grads, unflatten_grads
from trainer.lowcomm.steps import alone_in_island


def _model_after_steps(copy: bool) -> list[torch.Tensor]:
    """AdamW over a model with one parameter backward never reaches, three steps, the
    gradients handed over through the flat copy (``copy``) or left in place."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    unused = nn.Parameter(torch.randn(4))
    parameters = [*model.parameters(), unused]
    optimizer = torch.optim.AdamW(parameters, lr=0.01, weight_decay=0.1)
    for step in range(3):
        x = torch.randn(7, 6, generator=torch.Generator().manual_seed(step))
        loss = model(x).pow(2).sum()
        loss.backward()
        units = 7.0
        if copy:
            got = unflatten_grads(parameters, flat_grads(parameters, units))
        else:
            got = alone_in_island(parameters, units)
        assert got == units
        for p in parameters:
            assert p.grad is not None
            p.grad.div_(got)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return [p.detach().clone() for p in parameters]


def test_an_island_of_one_rank_steps_exactly_as_through_the_flat_copy() -> None:
    through_copy, in_place = _model_after_steps(True), _model_after_steps(False)
    for a, b in zip(through_copy, in_place, strict=True):
        assert torch.equal(a, b)
    # The parameter without a gradient was stepped (weight decay) in both, not skipped.
    torch.manual_seed(4)
    nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    assert not torch.equal(in_place[-1], torch.randn(4))


def test_units_pass_through_float32_as_the_copy_carries_them() -> None:
    units = 2.0**24 + 1  # not a float32: the copy rounds it
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    assert alone_in_island([p], units) == unflatten_grads([p], flat_grads([p], units))
