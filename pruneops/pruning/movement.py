"""Movement scores accumulated during fine-tuning (Sanh et al., 2020).

>>> import torch
>>> layer = torch.nn.Linear(4, 2)
>>> tracker = MovementTracker({"fc": layer})
>>> layer(torch.ones(1, 4)).sum().backward()
>>> tracker.step()
>>> tracker.scores["fc"].shape
torch.Size([2, 4])
"""

from __future__ import annotations

import torch
from torch import nn


class MovementTracker:
    """Accumulates ``-w * dL/dw`` for each layer after every backward pass.

    Weights that the optimizer pushes toward zero get low scores; pass ``tracker.scores`` to
    ``MovementConfig(scores=...)`` to prune by them.
    """

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        self.layers = layers
        self.scores = {name: torch.zeros_like(_original(m)) for name, m in layers.items()}

    def step(self) -> None:
        """Call after ``loss.backward()`` and before ``optimizer.step()``."""
        with torch.no_grad():
            for name, module in self.layers.items():
                weight = _original(module)
                if weight.grad is not None:
                    self.scores[name] -= weight * weight.grad


def _original(module: nn.Module) -> torch.Tensor:
    from pruneops.pruning.api import original_weight

    return original_weight(module)
