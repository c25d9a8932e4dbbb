"""The networks corral trains, in plain torch: a small CNN and CIFAR-style ResNet-18/50.

Normalisation is a choice (``--norm``): ``batch`` (BatchNorm: statistics per rank, so results
depend on the split), ``syncbatch`` (SyncBatchNorm: statistics over the whole global batch) or
``group`` (GroupNorm: per sample, so the split cannot change the result).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from profiles.user_errors import UsageError

NormFactory = Callable[[int], nn.Module]


def norm_factory(norm: str) -> NormFactory:
    """A constructor ``channels -> normalisation layer`` for ``norm``."""
    if norm in ("batch", "syncbatch"):
        # syncbatch is BatchNorm converted after construction (see build_model).
        return nn.BatchNorm2d
    if norm == "group":
        # Up to 32 groups, as many as divide the channel count.
        return lambda c: nn.GroupNorm(next(g for g in (32, 16, 8, 4, 2, 1) if c % g == 0), c)
    raise UsageError(f"unknown --norm {norm!r}; choose batch, syncbatch or group")


class SimpleCNN(nn.Module):
    """Two conv blocks and two linear layers for 32x32 images: fast enough for CPU tests.

    Smooth activations (SiLU) and average pooling on purpose: splits sum gradients in another
    order, so parameters differ by float rounding (~1e-7); a ReLU or max-pool near a tie can
    switch on that and turn it into a visible difference, SiLU and averaging cannot.
    """

    def __init__(self, num_classes: int, norm: NormFactory) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False),
            norm(32),
            nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            norm(64),
            nn.SiLU(),
            nn.AvgPool2d(2),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.SiLU(), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.features(x))
        return out


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm(planes)
        self.shortcut = _shortcut(cin, planes, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a shortcut (ResNet-50)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = norm(planes * 4)
        self.shortcut = _shortcut(cin, planes * 4, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int, norm: NormFactory) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))


class ResNet(nn.Module):
    """CIFAR-style ResNet: a 3x3 stem without max-pool (32x32 inputs), four stages, linear head."""

    def __init__(
        self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int],
        num_classes: int, norm: NormFactory,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), norm(64), nn.ReLU())
        stages: list[nn.Module] = []
        cin = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(block(cin, planes, stride, norm))
                cin = planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.stages(self.stem(x)))
        return out


def build_model(name: str, num_classes: int, norm: str) -> nn.Module:
    """The named model with freshly initialised weights (seed torch first for reproducibility)."""
    factory = norm_factory(norm)
    model: nn.Module
    if name == "simple_cnn":
        model = SimpleCNN(num_classes, factory)
    elif name == "resnet18":
        model = ResNet(BasicBlock, (2, 2, 2, 2), num_classes, factory)
    elif name == "resnet50":
        model = ResNet(Bottleneck, (3, 4, 6, 3), num_classes, factory)
    else:
        raise UsageError(f"unknown --model {name!r}; choose simple_cnn, resnet18 or resnet50")
    if norm == "syncbatch":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
