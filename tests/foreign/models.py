"""A residual MLP with LayerNorm, written as a team would (no pruneops code).

Structured pruning of its hidden width changes ``LayerNorm.normalized_shape``, a tuple
attribute: the regression of issue 14 (``weight of shape [32] and normalized_shape = [64]``).

>>> import torch
>>> ResidualMLP(30, 64, 2)(torch.randn(4, 30)).shape
torch.Size([4, 2])
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.up = nn.Linear(hidden, hidden * 2)
        self.down = nn.Linear(hidden * 2, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(self.norm(x))))


class ResidualMLP(nn.Module):
    def __init__(self, inputs: int = 30, hidden: int = 64, classes: int = 2, blocks: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(inputs, hidden)
        self.blocks = nn.ModuleList(Block(hidden) for _ in range(blocks))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
