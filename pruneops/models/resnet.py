"""A ResNet-style CNN (BasicBlocks with residual adds), every width a constructor argument.

For CPU structured-pruning benchmarks: residual adds couple channels across blocks, which is
what Torch-Pruning's dependency graph exists for.

>>> import torch
>>> build(widths=[16, 32], blocks=1)(torch.randn(2, 3, 32, 32)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pruneops.trust import model_factory


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, widths: list[int], blocks: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers: list[nn.Module] = []
        inputs = widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks):
                layers.append(BasicBlock(inputs, width, 2 if stage > 0 and index == 0 else 1))
                inputs = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(inputs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1))


@model_factory
def build(widths: list[int] | None = None, blocks: int = 2, num_classes: int = 10) -> ResNet:
    """The architecture factory: ``ResNet(widths, blocks, num_classes)``; default widths 64-128-256-512.

    >>> model = build(widths=[8, 16], blocks=1, num_classes=3)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 3])
    """
    return ResNet(widths or [64, 128, 256, 512], blocks, num_classes)
