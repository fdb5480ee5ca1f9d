"""Recovery fine-tuning: training that knows nothing of pruning.

``finetune`` trains with the masks held in place (they are parametrizations, so every
optimizer step sees ``original * mask``), optionally distilling from the dense teacher (KL
on temperature-softened logits, mixed with the task loss), with early stopping on the
task's primary metric and a progress bar. What pruning needs from training (a movement
tracker reading gradients) comes in as a callback; the schedule that interleaves pruning and
fine-tuning sits above both (:mod:`pruneops.schedule`).

>>> float(distillation_loss(torch.tensor([[0.0, 3.0]]), torch.tensor([[0.0, 3.0]]), 2.0))
0.0
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pruneops.errors import PruningError
from pruneops.recipe import FinetuneSpec
from pruneops.tasks import Task


@dataclass
class FinetuneResult:
    """Per-epoch metrics, the best primary metric, and whether early stopping ended training."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    stopped_early: bool = False


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on softened logits, scaled by T² (Hinton et al., 2015).

    >>> x = torch.tensor([[1.0, 2.0]])
    >>> float(distillation_loss(x, x, 2.0))
    0.0
    """
    return (
        F.kl_div(
            F.log_softmax(student / temperature, dim=-1),
            F.log_softmax(teacher / temperature, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )


def finetune(
    model: nn.Module,
    task: Task,
    config: FinetuneSpec,
    teacher: nn.Module | None = None,
    after_backward: Callable[[], None] | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``model`` in place; masks stay exactly where they are.

    ``after_backward`` runs after each backward pass, before the optimizer step (a movement
    tracker reads the gradients there). With early stopping the weights of the best epoch are
    restored at the end.

    >>> from pruneops.modelio import build_model
    >>> from pruneops.pruning import MagnitudeConfig, prune_
    >>> from pruneops.recipe import FinetuneSpec
    >>> from pruneops.tasks.digits import task
    >>> model = build_model(task.arch)
    >>> _ = prune_(model, MagnitudeConfig(sparsity=0.5))
    >>> zeros = (model.get_submodule("features.0").weight == 0)
    >>> result = finetune(model, task, FinetuneSpec(epochs=1, lr=3e-3), progress=False)
    >>> len(result.history), sorted(result.history[0])[:3]
    (1, ['accuracy', 'accuracy_class_0', 'accuracy_class_1'])
    >>> bool((model.get_submodule("features.0").weight[zeros] == 0).all())  # the mask held
    True
    """
    result = FinetuneResult()
    if config.epochs == 0:
        return result
    if config.distill is not None and teacher is None:
        raise PruningError("finetune.distill needs the dense teacher model")
    optimizer = _optimizer(model, config)
    if teacher is not None:
        teacher.eval()
    best_state: dict[str, torch.Tensor] | None = None
    patience = config.early_stopping.patience if config.early_stopping else None
    stale = 0
    with _progress(progress, config.epochs) as bar:
        for epoch in range(config.epochs):
            model.train()
            total, steps = 0.0, 0
            for inputs, targets in task.train_batches(config.batch_size, seed=config.seed * 1000 + epoch):
                optimizer.zero_grad(set_to_none=True)
                outputs = model(inputs)
                loss = task.loss(outputs, targets)
                if config.distill is not None and teacher is not None:
                    with torch.no_grad():
                        teacher_outputs = teacher(inputs)
                    kd = distillation_loss(outputs, teacher_outputs, config.distill.temperature)
                    loss = (1 - config.distill.alpha) * loss + config.distill.alpha * kd
                loss.backward()
                if after_backward is not None:
                    after_backward()
                optimizer.step()
                total, steps = total + loss.item(), steps + 1
            metrics = {"epoch": float(epoch + 1), "train_loss": total / max(steps, 1), **task.evaluate(model)}
            result.history.append(metrics)
            score = metrics[task.primary_metric]
            min_delta = config.early_stopping.min_delta if config.early_stopping else 0.0
            if result.best_metric is None or score > result.best_metric + min_delta:
                result.best_metric, result.best_epoch, stale = score, epoch + 1, 0
                if patience is not None:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            bar(epoch + 1, f"{task.primary_metric} {score:.4f}")
            if patience is not None and stale >= patience:
                result.stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result


def _optimizer(model: nn.Module, config: FinetuneSpec) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


class _progress:
    """A rich progress bar over epochs, or nothing when ``enabled`` is False."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._bar: Any = None

    def __enter__(self) -> Any:
        if self.enabled:
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task("fine-tuning", total=self.total)
        return self

    def __call__(self, done: int, note: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, description=f"fine-tuning ({note})")

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
