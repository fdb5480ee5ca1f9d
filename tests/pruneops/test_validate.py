"""validate + gates on digits: interleaved measurement per runtime, evidence, honest failures."""

from __future__ import annotations

import copy

import pytest
from torch import nn

from pruneops.evidence import ValidationEvidence
from pruneops.gates import evaluate_gates
from pruneops.pruning import MagnitudeConfig, prune_
from pruneops.recipe import parse_recipe
from pruneops.tasks.digits import task
from pruneops.validate import validate

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def channels_candidate(digits_baseline: nn.Module) -> nn.Module:
    model = copy.deepcopy(digits_baseline)
    prune_(model, MagnitudeConfig(pattern="channels", sparsity=0.5), example_inputs=task.example_input(1))
    return model


def test_validate_measures_every_runtime_and_batch(digits_baseline: nn.Module, channels_candidate: nn.Module) -> None:
    recipe = parse_recipe(
        {
            "prune": {"sparsity": 0.5},
            "validate": {"runtimes": ["onnxruntime", "torch"], "batch_sizes": [1, 16], "warmup": 2, "iterations": 10},
            "gates": {"max_accuracy_drop": 1.0, "min_speedup": 0.01, "max_p99_ms": 10_000},
        }
    )
    report = validate(digits_baseline, channels_candidate, task, recipe.validate_)
    assert [r.runtime for r in report.runtimes] == ["onnxruntime", "torch"]
    for result in report.runtimes:
        assert sorted(result.batches) == [1, 16]
        for batch in result.batches.values():
            assert batch.dense.iterations == batch.candidate.iterations == 10
            assert batch.speedup.ratio > 0
        assert result.candidate_bytes is not None and result.dense_bytes is not None
        assert result.candidate_bytes < result.dense_bytes
    onnx = report.runtimes[0]
    assert onnx.evidence["candidate"]["provider"] == "CPUExecutionProvider"
    assert report.accuracy_drop == pytest.approx(
        task.evaluate(digits_baseline)["accuracy"] - task.evaluate(channels_candidate)["accuracy"]
    )
    gate = evaluate_gates(*report.measured(), recipe.gates)
    assert gate.passed, gate.reasons
    recorded = ValidationEvidence.model_validate(report)  # as it is logged to the registry
    assert ValidationEvidence.model_validate_json(recorded.model_dump_json()) == recorded
    assert recorded.runtimes[0].offline.speedup.ratio == onnx.offline.speedup.ratio


def test_gate_fails_on_accuracy_with_reason(digits_baseline: nn.Module, channels_candidate: nn.Module) -> None:
    recipe = parse_recipe(
        {"prune": {"sparsity": 0.5}, "validate": {"runtimes": ["torch"], "batch_sizes": [1], "iterations": 5}}
    )
    report = validate(digits_baseline, channels_candidate, task, recipe.validate_)
    gate = evaluate_gates(*report.measured(), recipe.gates)
    assert not gate.passed
    assert gate.reasons[0].startswith("accuracy drop 0.")  # one-shot 50% channels lose accuracy


def test_unavailable_runtime_is_recorded_not_replaced(digits_baseline: nn.Module) -> None:
    recipe = parse_recipe(
        {"prune": {"sparsity": 0.5}, "validate": {"target": "cuda", "runtimes": ["torch-sparse"], "iterations": 5}}
    )
    report = validate(digits_baseline, digits_baseline, task, recipe.validate_)
    if report.runtimes:  # a CUDA machine measures for real
        assert report.runtimes[0].runtime == "torch-sparse"
        return
    assert report.runtimes == [] and "torch-sparse" in report.unavailable
    gate = evaluate_gates(*report.measured(), recipe.gates)
    assert any(r.startswith("runtime torch-sparse unavailable") for r in gate.reasons)
