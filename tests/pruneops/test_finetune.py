"""Recovery fine-tuning on digits: masks hold, accuracy comes back, schedules reach their target."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from pruneops.errors import PruningError
from pruneops.finetune import distillation_loss, finetune
from pruneops.pruning import MagnitudeConfig, make_permanent, masks_of, prune_, satisfies_nm
from pruneops.recipe import FinetuneSpec, load_recipe, parse_recipe
from pruneops.schedule import cubic_schedule, prune_and_recover
from pruneops.tasks.digits import task

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def dense_accuracy(digits_baseline: nn.Module) -> float:
    return task.evaluate(digits_baseline)["accuracy"]


def recover(digits_baseline: nn.Module, recipe: dict) -> tuple[nn.Module, object]:
    parsed = parse_recipe(recipe)
    model = copy.deepcopy(digits_baseline)
    result = prune_and_recover(model, task, parsed.prune, parsed.finetune, teacher=digits_baseline, progress=False)
    return model, result


def test_masks_unchanged_after_finetune(digits_baseline: nn.Module) -> None:
    model = copy.deepcopy(digits_baseline)
    prune_(model, MagnitudeConfig(sparsity=0.5))
    before = masks_of(model)
    zeros_before = {n: (model.get_submodule(n).weight == 0) for n in before}
    finetune(model, task, FinetuneSpec(epochs=2, lr=5e-3, optimizer="adam", weight_decay=1e-3), progress=False)
    after = masks_of(model)
    for name, mask in before.items():
        assert torch.equal(after[name], mask), name
        weight = model.get_submodule(name).weight
        assert bool((weight[~mask] == 0).all()), name  # every pruned weight is still exactly zero
        assert torch.equal(weight == 0, zeros_before[name] | (weight == 0)), name


@pytest.mark.parametrize(
    ("recipe", "max_drop"),
    [
        ({"prune": {"method": "wanda", "pattern": "2:4", "exclude": ["features.0"]},
          "finetune": {"epochs": 3, "lr": 1e-3, "distill": {"temperature": 2.0, "alpha": 0.5}}}, 0.01),
        ({"prune": {"method": "magnitude", "sparsity": 0.5}, "finetune": {"epochs": 3, "lr": 1e-3}}, 0.01),
        ({"prune": {"method": "magnitude", "pattern": "channels", "sparsity": 0.5},
          "finetune": {"epochs": 5, "lr": 1e-3, "distill": {}}}, 0.02),
    ],
    ids=["2:4-wanda", "50%-unstructured", "50%-channels"],
)  # fmt: skip
def test_digits_recovers_within_target(
    digits_baseline: nn.Module, dense_accuracy: float, recipe: dict, max_drop: float
) -> None:
    model, result = recover(digits_baseline, recipe)
    make_permanent(model)
    accuracy = task.evaluate(model)["accuracy"]
    assert dense_accuracy - accuracy <= max_drop, (dense_accuracy, accuracy)
    if recipe["prune"].get("pattern") == "2:4":
        for layer in result.report.layers:
            assert satisfies_nm(model.get_submodule(layer.name).weight, 2, 4), layer.name
    if recipe["prune"].get("pattern") == "channels":
        assert result.report.params_after < 0.3 * result.report.params_before


def test_iterative_cubic_schedule_reaches_target(digits_baseline: nn.Module) -> None:
    recipe = {
        "prune": {"method": "magnitude", "sparsity": 0.8, "schedule": {"kind": "iterative", "steps": 3}},
        "finetune": {"epochs": 1, "lr": 1e-3},
    }
    _, result = recover(digits_baseline, recipe)
    targets = [step["target_sparsity"] for step in result.steps]
    assert targets == pytest.approx(cubic_schedule(0.8, 3))
    assert targets[0] > 0.8 / 3  # cubic prunes most in the first step
    assert result.report.sparsity == pytest.approx(0.8, abs=1e-3)
    assert len(result.steps) == 3 and all(len(s["finetune"]) == 1 for s in result.steps)


def test_iterative_structured_removes_share_of_what_is_left(digits_baseline: nn.Module) -> None:
    recipe = {
        "prune": {"method": "magnitude", "pattern": "channels", "sparsity": 0.5,
                  "schedule": {"kind": "iterative", "steps": 2, "curve": "linear"}},
        "finetune": {"epochs": 1},
    }  # fmt: skip
    model, _ = recover(digits_baseline, recipe)
    assert model.features[3].out_channels == 32  # 64 -> 48 -> 32, not 64 -> 48 -> 24


def test_movement_with_rewinding(digits_baseline: nn.Module) -> None:
    recipe = {
        "prune": {"method": "movement", "sparsity": 0.7,
                  "schedule": {"kind": "iterative", "steps": 2, "rewind_epoch": 1}},
        "finetune": {"epochs": 2, "lr": 1e-3},
    }  # fmt: skip
    model, result = recover(digits_baseline, recipe)
    assert result.report.sparsity == pytest.approx(0.7, abs=1e-3)
    assert [step["step"] for step in result.steps] == [0, 1, 2]  # a dense pass gathers scores first
    assert task.evaluate(model)["accuracy"] > 0.9


def test_structured_rewind_refused(digits_baseline: nn.Module) -> None:
    with pytest.raises(PruningError, match="structured pruning changes shapes"):
        recover(digits_baseline, {"prune": {"pattern": "channels", "sparsity": 0.5, "schedule":
                                            {"kind": "iterative", "steps": 2, "rewind_epoch": 0}}})  # fmt: skip


def test_iterative_nm_refused(digits_baseline: nn.Module) -> None:
    with pytest.raises(PruningError, match="N:M pattern has one fixed sparsity"):
        recover(digits_baseline, {"prune": {"pattern": "2:4", "schedule": {"kind": "iterative", "steps": 2}}})


def test_early_stopping_restores_best(digits_baseline: nn.Module) -> None:
    model = copy.deepcopy(digits_baseline)
    prune_(model, MagnitudeConfig(sparsity=0.9))
    # A learning rate this high makes later epochs worse: training stops and keeps the best.
    spec = FinetuneSpec(epochs=8, lr=0.5, optimizer="sgd", early_stopping={"patience": 1})
    result = finetune(model, task, spec, progress=False)
    assert result.stopped_early and len(result.history) < 8
    assert task.evaluate(model)["accuracy"] == pytest.approx(result.best_metric)


def test_distillation_needs_teacher(digits_baseline: nn.Module) -> None:
    with pytest.raises(PruningError, match="needs the dense teacher"):
        finetune(copy.deepcopy(digits_baseline), task, FinetuneSpec(epochs=1, distill={}), progress=False)


def test_distillation_loss_properties() -> None:
    student = torch.tensor([[2.0, 0.0, -1.0]])
    teacher = torch.tensor([[0.0, 2.0, -1.0]])
    assert float(distillation_loss(teacher, teacher, 3.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(distillation_loss(student, teacher, 1.0)) > 0
    # Softer targets at higher temperature carry less divergence before the T² scaling.
    assert float(distillation_loss(student, teacher, 4.0)) / 16 < float(distillation_loss(student, teacher, 1.0))


@pytest.mark.parametrize("path", sorted(Path("recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_example_recipes_run_on_digits(path: Path, digits_baseline: nn.Module, dense_accuracy: float) -> None:
    recipe = load_recipe(path)
    model = copy.deepcopy(digits_baseline)
    spec = recipe.finetune.model_copy(update={"epochs": min(recipe.finetune.epochs, 2)})
    result = prune_and_recover(model, task, recipe.prune, spec, teacher=digits_baseline, progress=False)
    assert result.report.sparsity >= 0.45
    assert task.evaluate(model)["accuracy"] > dense_accuracy - 0.05


def test_fine_tuning_knows_nothing_of_pruning() -> None:
    """The schedule sits above both: finetune.py imports no pruning module, it takes a callback."""
    import ast

    import pruneops.finetune

    tree = ast.parse(Path(pruneops.finetune.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name.startswith(("pruneops.pruning", "pruneops.schedule"))}
