"""A team's model and data as they would have them: a LayerNorm residual MLP trained on
scikit-learn's breast-cancer set, and that set as an ``.npz`` file (inputs, labels).

>>> # model, path = train("/tmp/cancer-doc")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tests.foreign.models import ResidualMLP

ARCH = {"inputs": 30, "hidden": 64, "classes": 2, "blocks": 3}
FACTORY = "tests.foreign.models:ResidualMLP"


def data_file(folder: str | Path) -> Path:
    """The breast-cancer set, standardised, as ``cancer.npz``."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    path = Path(folder) / "cancer.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, inputs=x, labels=y.astype(np.int64))
    return path


def train(folder: str | Path, epochs: int = 30) -> tuple[ResidualMLP, Path]:
    """Train the model on the whole file (as a team would have, outside pruneops)."""
    path = data_file(folder)
    with np.load(path) as arrays:
        x, y = torch.from_numpy(arrays["inputs"]), torch.from_numpy(arrays["labels"])
    torch.manual_seed(0)
    model = ResidualMLP(**ARCH)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for index in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    return model.eval(), path
