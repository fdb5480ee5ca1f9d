"""Pruning schedules: prune and fine-tune in turns, as a recipe's prune and finetune sections say.

One-shot, or iterative over K steps on a cubic or linear schedule, with optional weight
rewinding (lottery-ticket style). This loop sits above both pruning (:mod:`pruneops.pruning`)
and fine-tuning (:mod:`pruneops.finetune`): it turns the recipe's specs into configs and hands
fine-tuning only a callback (a movement tracker's), so neither knows about the other.

>>> [round(s, 4) for s in cubic_schedule(0.8, 4)]
[0.4625, 0.7, 0.7875, 0.8]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pruneops.errors import PruningError
from pruneops.finetune import finetune
from pruneops.pruning import (
    MovementConfig,
    PruneConfig,
    PruneReport,
    from_spec,
    glob_filter,
    masks_of,
    prune_,
    select_layers,
)
from pruneops.pruning.movement import MovementTracker
from pruneops.recipe import FinetuneSpec, PruneSpec
from pruneops.tasks import Task


def _tracking(tracker: MovementTracker | None) -> Callable[[], None] | None:
    """Fine-tuning's after-backward callback: the movement tracker's step, if there is one."""
    return tracker.step if tracker is not None else None


def cubic_schedule(final: float, steps: int) -> list[float]:
    """Gradual pruning targets (Zhu & Gupta, 2017): ``s_k = s (1 - (1 - k/K)^3)``; fast early, slow late.

    >>> [round(s, 3) for s in cubic_schedule(0.8, 4)]
    [0.463, 0.7, 0.788, 0.8]
    """
    return [final * (1 - (1 - k / steps) ** 3) for k in range(1, steps + 1)]


def linear_schedule(final: float, steps: int) -> list[float]:
    """Equal increments of sparsity per step.

    >>> linear_schedule(0.6, 3)
    [0.2, 0.4, 0.6]
    """
    return [round(final * k / steps, 12) for k in range(1, steps + 1)]


@dataclass
class RecoveryResult:
    """The report of the last pruning step and the fine-tuning history of every step."""

    report: PruneReport
    steps: list[dict[str, Any]]


def prune_and_recover(
    model: nn.Module,
    task: Task,
    prune: PruneSpec,
    finetune_spec: FinetuneSpec,
    teacher: nn.Module | None = None,
    progress: bool = True,
    final_finetune: bool = True,
) -> RecoveryResult:
    """Prune ``model`` in place as the recipe says, fine-tuning after each step.

    ``final_finetune=False`` skips the fine-tuning after the last step (the pipeline's
    finetune step does it, with the masks it is handed).

    One-shot: prune, then fine-tune. Iterative: prune to the schedule's next target,
    fine-tune, repeat. Movement first fine-tunes the dense model once to gather its scores,
    and keeps gathering them in every later fine-tuning. With ``rewind_epoch`` the
    surviving weights are reset after each later pruning step to a checkpoint taken at
    that epoch of the first fine-tuning (epoch 0: the dense weights).

    >>> from pruneops.recipe import parse_recipe
    >>> from pruneops.tasks.digits import build, task
    >>> recipe = parse_recipe({"prune": {"sparsity": 0.5}, "finetune": {"epochs": 0}})
    >>> result = prune_and_recover(build(**task.arch.kwargs), task, recipe.prune, recipe.finetune, progress=False)
    >>> round(result.report.sparsity, 2), [step["target_sparsity"] for step in result.steps]
    (0.5, [0.5])
    """
    schedule = prune.schedule
    if schedule.kind == "iterative" and prune.nm is not None:
        raise PruningError("an N:M pattern has one fixed sparsity; use schedule kind: oneshot")
    if schedule.rewind_epoch is not None and prune.structured:
        raise PruningError("weight rewinding needs masks; structured pruning changes shapes, drop rewind_epoch")
    final = float(prune.sparsity or 0)
    targets = [final] if schedule.kind == "oneshot" else _targets(final, schedule.steps, schedule.curve)
    filter_fn = glob_filter(prune.include, prune.exclude)
    batches = list(task.train_batches(64, seed=4321))[: prune.calibration_batches]
    example = task.example_input(1)
    tracker: MovementTracker | None = None
    checkpoint: dict[str, torch.Tensor] | None = None
    steps: list[dict[str, Any]] = []
    reached = 0.0
    report: PruneReport | None = None
    if prune.method == "movement" and not prune.structured:
        # Movement scores come from training: gather them in a dense fine-tuning pass first,
        # rather than from one noisy gradient estimate on a converged model.
        tracker = MovementTracker(select_layers(model, filter_fn))
        warmup = finetune(model, task, finetune_spec, teacher, _tracking(tracker), progress)
        steps.append({"step": 0, "target_sparsity": 0.0, "sparsity": 0.0, "finetune": warmup.history})
    for index, target in enumerate(targets):
        config = _step_config(prune, target, reached, task, tracker)
        report = prune_(model, config, filter_fn, batches, example_inputs=example)
        reached = target
        if checkpoint is not None:
            _rewind(model, checkpoint)
        step_spec = finetune_spec
        if index == 0 and schedule.rewind_epoch is not None:
            checkpoint = _checkpoint_at(model, task, finetune_spec, teacher, schedule.rewind_epoch, progress)
            step_spec = finetune_spec.model_copy(update={"epochs": finetune_spec.epochs - schedule.rewind_epoch})
        if index == len(targets) - 1 and not final_finetune:
            step_spec = step_spec.model_copy(update={"epochs": 0})
        history = finetune(model, task, step_spec, teacher, _tracking(tracker), progress)
        steps.append(
            {"step": index + 1, "target_sparsity": target, "sparsity": report.sparsity, "finetune": history.history}
        )
    if report is None:  # a schedule always has a step; never let -O turn this into a None report
        raise PruningError("the pruning schedule has no step")
    report.masks = masks_of(model)
    return RecoveryResult(report, steps)


def _targets(final: float, steps: int, curve: str) -> list[float]:
    return cubic_schedule(final, steps) if curve == "cubic" else linear_schedule(final, steps)


def _step_config(
    prune: PruneSpec, target: float, reached: float, task: Task, tracker: MovementTracker | None
) -> PruneConfig:
    """The config for one step. Structured steps remove a share of what is left."""
    spec = prune
    if prune.structured:
        target = 1 - (1 - target) / (1 - reached)
    if prune.nm is None:
        spec = prune.model_copy(update={"sparsity": target})
    config = from_spec(spec, loss_fn=task.loss)
    if isinstance(config, MovementConfig) and tracker is not None:
        config = MovementConfig(
            sparsity=config.sparsity, pattern=config.pattern, scope=config.scope, scores=tracker.scores
        )
    return config


def _checkpoint_at(
    model: nn.Module, task: Task, spec: FinetuneSpec, teacher: nn.Module | None, epoch: int, progress: bool
) -> dict[str, torch.Tensor]:
    """Fine-tune ``epoch`` epochs and return the weights then (the rewind point)."""
    if epoch > spec.epochs:
        raise PruningError(f"rewind_epoch {epoch} is past finetune.epochs {spec.epochs}")
    finetune(model, task, spec.model_copy(update={"epochs": epoch}), teacher, progress=progress)
    return {k: v.clone() for k, v in model.state_dict().items() if not k.endswith(".mask")}


def _rewind(model: nn.Module, checkpoint: dict[str, torch.Tensor]) -> None:
    """Reset weights to the checkpoint; masks (and so the zeros) stay as they are now."""
    state = model.state_dict()
    with torch.no_grad():
        for key, value in checkpoint.items():
            if key in state and state[key].shape == value.shape:
                state[key].copy_(value)
    from pruneops.pruning.api import get_mask, original_weight

    with torch.no_grad():
        for module in model.modules():
            mask = get_mask(module)
            if mask is not None:
                original_weight(module).mul_(mask)
