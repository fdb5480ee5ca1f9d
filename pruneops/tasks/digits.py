"""The digits reference task: a small CNN on scikit-learn's 8x8 handwritten digits.

The data ships inside scikit-learn (1,797 images, 10 classes), so the task needs no
download. The split is fixed (80/20, stratified, seed 0) and training is deterministic for
a given seed: two runs on one machine give identical weights. Training takes a few seconds
on 2 cores and reaches about 98% test accuracy.

>>> task.name, task.primary_metric
('digits', 'accuracy')
>>> task.example_input(batch_size=2).shape
torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pruneops.modelio import ArchSpec
from pruneops.probe import CLASSES
from pruneops.tasks import Batch, Task
from pruneops.trust import model_factory

NUM_CLASSES = 10


class DigitsCNN(nn.Module):
    """Three conv blocks and a two-layer classifier; every width is a constructor argument."""

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 128), hidden: int = 128) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c3 * 4, hidden), nn.ReLU(), nn.Linear(hidden, NUM_CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@model_factory
def build(channels: list[int] | tuple[int, int, int] = (32, 64, 128), hidden: int = 128) -> DigitsCNN:
    """The architecture factory named in ``arch.json``.

    >>> sum(p.numel() for p in build().parameters()) > 0
    True
    """
    c1, c2, c3 = channels
    return DigitsCNN((c1, c2, c3), hidden)


class DigitsTask(Task):
    """scikit-learn digits, pixels scaled to [0, 1], shaped ``(N, 1, 8, 8)``."""

    name = "digits"
    primary_metric = "accuracy"
    output_kind = CLASSES
    arch = ArchSpec(factory="pruneops.tasks.digits:build", kwargs={"channels": [32, 64, 128], "hidden": 128})

    def __init__(self, epochs: int = 15, lr: float = 3e-3, batch_size: int = 64) -> None:
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size

    @cached_property
    def _split(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        data = load_digits()
        images = (data.images / 16.0).astype(np.float32)[:, None, :, :]
        x_train, x_test, y_train, y_test = train_test_split(
            images, data.target, test_size=0.2, random_state=0, stratify=data.target
        )
        return (
            torch.from_numpy(x_train), torch.from_numpy(y_train).long(),
            torch.from_numpy(x_test), torch.from_numpy(y_test).long(),
        )  # fmt: skip

    def train_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        x, y, _, _ = self._split
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            yield x[index], y[index]

    def eval_batches(self, batch_size: int = 256) -> Iterator[Batch]:
        _, _, x, y = self._split
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]

    def calibration_batches(self, count: int, batch_size: int = 64) -> list[torch.Tensor]:
        return [x for x, _ in self.train_batches(batch_size, seed=1234)][:count]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Accuracy (primary), loss, macro F1 and per-class accuracy (pruning hurts some classes more)."""
        model.eval()
        predictions, targets, losses = [], [], []
        for x, y in self.eval_batches():
            logits = model(x)
            losses.append(F.cross_entropy(logits, y, reduction="sum").item())
            predictions.append(logits.argmax(dim=1))
            targets.append(y)
        pred, true = torch.cat(predictions), torch.cat(targets)
        metrics = {"accuracy": (pred == true).float().mean().item(), "loss": sum(losses) / len(true)}
        f1s = []
        for cls in range(NUM_CLASSES):
            is_true, is_pred = true == cls, pred == cls
            tp = (is_true & is_pred).sum().item()
            metrics[f"accuracy_class_{cls}"] = tp / max(int(is_true.sum()), 1)
            f1s.append(2 * tp / max(int(is_true.sum() + is_pred.sum()), 1))
        metrics["macro_f1"] = float(np.mean(f1s))
        return metrics

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        _, _, x, _ = self._split
        return x[:batch_size].clone()

    def features(self, inputs: np.ndarray) -> np.ndarray:
        """The 64 pixel intensities of each image: small enough to use as drift features as is."""
        return np.asarray(inputs, dtype=np.float32).reshape(len(inputs), -1)

    @property
    def feature_names(self) -> list[str]:
        return [f"px_{row}_{col}" for row in range(8) for col in range(8)]

    def reference_sample(self) -> np.ndarray:
        x, _, _, _ = self._split
        return self.features(x[:500].numpy())

    def reference_predictions(self, model: nn.Module) -> np.ndarray:
        x, _, _, _ = self._split
        model.eval()
        with torch.no_grad():
            return model(x[:500]).argmax(dim=1).numpy()

    def train_baseline(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        model = build(**self.arch.kwargs)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)
        for epoch in range(self.epochs):
            model.train()
            for x, y in self.train_batches(self.batch_size, seed=seed * 1000 + epoch):
                optimizer.zero_grad()
                self.loss(model(x), y).backward()
                optimizer.step()
            schedule.step()
        return model.eval()


task = DigitsTask()
