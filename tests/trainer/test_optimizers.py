"""The optimizer settings reach torch's optimizers unchanged: a script's SGD or AdamW is ported
by naming its hyperparameters, and the default SGD is plain SGD (no momentum)."""

from __future__ import annotations

import torch
from torch import nn

from trainer.settings.train_config import TrainConfig, parse_config
from trainer.step.optim import make_optimizer


def _trained(optimizer: torch.optim.Optimizer, model: nn.Linear, steps: int = 3) -> torch.Tensor:
    torch.manual_seed(1)
    data = torch.randn(8, 4)
    for _ in range(steps):
        model(data).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.weight.detach().clone()


def _model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(4, 2)


def test_sgd_flags_give_torchs_sgd_with_those_hyperparameters() -> None:
    config = parse_config(["--lr", "0.1", "--momentum", "0.8", "--nesterov",
                           "--weight-decay", "0.01"])
    ours, reference = _model(), _model()
    got = _trained(make_optimizer(config, list(ours.parameters())), ours)
    want = _trained(torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.8, nesterov=True,
                                    weight_decay=0.01), reference)
    assert torch.equal(got, want)


def test_default_sgd_has_no_momentum() -> None:
    ours, reference = _model(), _model()
    got = _trained(make_optimizer(TrainConfig(lr=0.1), list(ours.parameters())), ours)
    want = _trained(torch.optim.SGD(reference.parameters(), lr=0.1), reference)
    assert torch.equal(got, want)


def test_adamw_flags_give_torchs_adamw_with_those_hyperparameters() -> None:
    config = parse_config(["--optimizer", "adamw", "--lr", "0.01", "--betas", "0.8,0.99",
                           "--eps", "1e-6", "--weight-decay", "0.1"])
    ours, reference = _model(), _model()
    got = _trained(make_optimizer(config, list(ours.parameters())), ours)
    want = _trained(torch.optim.AdamW(reference.parameters(), lr=0.01, betas=(0.8, 0.99),
                                      eps=1e-6, weight_decay=0.1), reference)
    assert torch.equal(got, want)
    default = _model()
    plain = _trained(make_optimizer(TrainConfig(optimizer="adamw", lr=0.01),
                                    list(default.parameters())), default)
    assert not torch.equal(plain, got)  # the hyperparameters changed the result
