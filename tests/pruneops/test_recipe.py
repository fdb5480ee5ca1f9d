"""Recipe schema: examples load, YAML round-trips, every invalid input names field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from pruneops.errors import RecipeError
from pruneops.recipe import Recipe, dump_recipe, load_recipe, parse_recipe

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))

pytestmark = pytest.mark.unit


def test_examples_exist() -> None:
    names = {p.name for p in RECIPES}
    assert {"wanda-2to4-gpu.yaml", "channels-50-cpu.yaml", "magnitude-50-unstructured.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_example_round_trips(path: Path) -> None:
    recipe = load_recipe(path)
    again = load_recipe(dump_recipe(recipe))
    assert again == recipe
    assert again.sha256() == recipe.sha256()
    assert dump_recipe(again) == dump_recipe(recipe)


def test_example_contents() -> None:
    wanda = load_recipe(Path("recipes/wanda-2to4-gpu.yaml"))
    assert (wanda.prune.method, wanda.prune.nm, wanda.prune.sparsity) == ("wanda", (2, 4), 0.5)
    assert wanda.validate_.target == "cuda" and "torch-sparse" in wanda.validate_.runtimes
    assert wanda.finetune.distill is not None and wanda.finetune.distill.temperature == 2.0
    channels = load_recipe(Path("recipes/channels-50-cpu.yaml"))
    assert (channels.prune.pattern, channels.prune.sparsity) == ("channels", 0.5)
    assert channels.gates.min_speedup == 1.3


def test_defaults_fill_in() -> None:
    recipe = parse_recipe({"prune": {"sparsity": 0.3}})
    assert recipe.prune.method == "magnitude" and recipe.prune.pattern == "unstructured"
    assert recipe.finetune.epochs == 0 and recipe.validate_.runtimes == ["onnxruntime"]
    assert recipe.to_dict()["validate"]["target"] == "cpu"


def test_nm_pattern_implies_sparsity() -> None:
    assert parse_recipe({"prune": {"pattern": "1:4"}}).prune.sparsity == 0.75
    assert parse_recipe({"prune": {"pattern": "2:8", "sparsity": 0.75}}).prune.nm == (2, 8)


def test_sha256_changes_with_content() -> None:
    a = parse_recipe({"prune": {"sparsity": 0.3}})
    b = parse_recipe({"prune": {"sparsity": 0.4}})
    assert a.sha256() != b.sha256()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"prune": {"pattern": "4:2"}}, "prune.pattern: N:M pattern '4:2' needs 0 < N < M"),
        ({"prune": {"pattern": "4:4"}}, "needs 0 < N < M"),
        ({"prune": {"pattern": "diagonal", "sparsity": 0.5}}, "unknown pattern 'diagonal'; use \"unstructured\""),
        ({"prune": {"sparsity": 1.5}}, "prune.sparsity: must be in (0, 1)"),
        ({"prune": {"sparsity": 0}}, "prune.sparsity: must be in (0, 1)"),
        ({"prune": {"sparsity": 1}}, "prune.sparsity: must be in (0, 1)"),
        ({"prune": {"method": "lottery", "sparsity": 0.5}}, "prune.method: Input should be 'magnitude'"),
        ({"prune": {"sparsty": 0.5}}, "prune.sparsty: unknown field; did you mean 'sparsity'?"),
        (
            {"prune": {"sparsity": 0.5}, "finetune": {"distil": {}}},
            "finetune.distil: unknown field; did you mean 'distill'?",
        ),
        ({"prune": {"sparsity": 0.5}, "gate": {}}, "gate: unknown field; did you mean 'gates'?"),
        ({"prune": {"method": "bn_scale", "pattern": "2:4"}}, "method 'bn_scale' does not apply to pattern '2:4'"),
        (
            {"prune": {"method": "wanda", "pattern": "channels", "sparsity": 0.5}},
            "does not apply to pattern 'channels'",
        ),
        ({"prune": {"pattern": "2:4", "sparsity": 0.3}}, "implies sparsity 0.5, got 0.3"),
        ({"prune": {"pattern": "channels"}}, "needs a sparsity in (0, 1)"),
        ({"prune": {"sparsity": 0.5, "scope": "global", "pattern": "channels"}}, "scope: global applies only"),
        ({"prune": {"sparsity": 0.5, "scope": "row", "pattern": "heads"}}, "scope: row applies only"),
        ({"prune": {"method": "sparsegpt", "sparsity": 0.5, "scope": "row"}}, "sparsegpt prunes layer by layer"),
        ({"prune": {"sparsity": 0.5, "schedule": {"steps": 3}}}, "use kind: iterative"),
        ({"prune": {"sparsity": 0.5}, "validate": {"runtimes": ["torch-sparse"]}}, "torch-sparse needs target: cuda"),
        ({"prune": {"sparsity": 0.5}, "validate": {"runtimes": ["tensorrt"]}}, "validate.runtimes.0: Input should be"),
        ({"prune": {"sparsity": 0.5}, "validate": {"batch_sizes": [0]}}, "needs one or more batch sizes >= 1"),
        ({"prune": {"sparsity": 0.5}, "finetune": {"lr": -1}}, "finetune.lr: Input should be greater than 0"),
        ({"prune": {"sparsity": 0.5}, "finetune": {"distill": {"alpha": 2}}}, "finetune.distill.alpha"),
        ({"prune": {"sparsity": 0.5}, "gates": {"min_speedup": {"onnxruntime": 0}}}, "speedup ratios must be > 0"),
        ({"prune": {"sparsity": 0.5}, "gates": {"max_accuracy_drop": -0.1}}, "gates.max_accuracy_drop"),
        ({}, "prune: required field is missing"),
    ],
)
def test_invalid_recipes_name_field_and_fix(data: dict, expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(data)
    assert expected in str(info.value)
    assert str(info.value).startswith("invalid recipe: ")


def test_several_errors_reported_together() -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe({"prune": {"sparsity": 2}, "finetune": {"epoch": 3}})
    assert "prune.sparsity" in str(info.value) and "finetune.epoch" in str(info.value)


def test_not_a_mapping() -> None:
    with pytest.raises(RecipeError, match="expected a mapping"):
        load_recipe("- just\n- a list\n")


def test_bad_yaml() -> None:
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe("prune: {method: [\n")


def test_missing_file() -> None:
    with pytest.raises(RecipeError, match=r"recipe file not found: nowhere\.yaml"):
        load_recipe("nowhere.yaml")


def test_recipe_is_immutable() -> None:
    recipe = parse_recipe({"prune": {"sparsity": 0.5}})
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError for frozen models
        recipe.prune.sparsity = 0.9  # type: ignore[misc]
    assert isinstance(recipe, Recipe)


@pytest.mark.parametrize(
    "section",
    [
        {"method": "bn_scale", "pattern": "2:4"},
        {"method": "wanda", "pattern": "heads", "sparsity": 0.5},
        {"method": "magnitude", "pattern": "channels", "sparsity": 0.5, "scope": "global"},
        {"method": "sparsegpt", "sparsity": 0.5, "scope": "row"},
        {"pattern": "2:4", "sparsity": 0.3},
        {"pattern": "3:2"},
        {"pattern": "channels"},
    ],
)
def test_the_recipe_and_the_engine_refuse_alike(section: dict) -> None:
    """One home for the pattern rules: the recipe's message is the engine config's message."""
    from pruneops.errors import PruningError
    from pruneops.pruning.config import _BY_METHOD

    with pytest.raises(RecipeError) as recipe_refusal:
        parse_recipe({"prune": section})
    config = _BY_METHOD[section.get("method", "magnitude")]
    with pytest.raises(PruningError) as engine_refusal:
        config(**{k: v for k, v in section.items() if k != "method"})
    assert str(engine_refusal.value).removeprefix("sparsity ") in str(recipe_refusal.value)
