"""The pipeline's steps as plain functions over folders, without KFP (the components wrap them).

prune -> finetune -> validate on the digits baseline; the evidence validate writes is what the
register step, the report and the KFP metrics read back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from pruneops import steps
from pruneops.evidence import EVIDENCE_FILE, Evidence
from pruneops.mlmodel import ONNX_FILE
from pruneops.modelio import save_model
from pruneops.recipe import parse_recipe
from pruneops.report import render
from pruneops.tasks.digits import task

pytestmark = pytest.mark.unit
TASK = "pruneops.tasks.digits:task"
RECIPE = parse_recipe({
    "prune": {"method": "magnitude", "pattern": "unstructured", "sparsity": 0.5},
    "finetune": {"epochs": 1},
    "validate": {"runtimes": ["torch", "onnxruntime"], "batch_sizes": [1, 8], "iterations": 5, "warmup": 1},
    "gates": {"max_accuracy_drop": 0.5},
})  # fmt: skip


def test_prune_finetune_validate_over_folders(digits_baseline: nn.Module, tmp_path: Path) -> None:
    dense = save_model(digits_baseline, tmp_path / "dense", task.arch, probe=task.probe(digits_baseline))
    report = steps.prune(dense, RECIPE, TASK, tmp_path / "pruned")
    assert report["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert (tmp_path / "pruned" / steps.MASKS_FILE).is_file()  # the finetune step puts them back
    summary = steps.finetune(tmp_path / "pruned", dense, RECIPE, TASK, tmp_path / "tuned")
    assert summary["epochs"] == 1

    passed, evidence = steps.validate(dense, tmp_path / "tuned", RECIPE, TASK, tmp_path / "evidence")
    assert passed is evidence.gate.passed is True
    assert Evidence.read(tmp_path / "evidence") == evidence  # written once, read back as the same model
    assert json.loads((tmp_path / "evidence" / EVIDENCE_FILE).read_text())["prune"]["sparsity"] == report["sparsity"]
    assert (tmp_path / "evidence" / ONNX_FILE).is_file() and evidence.onnx is not None and evidence.onnx.bytes > 0
    assert [r.runtime for r in evidence.validation.runtimes] == ["torch", "onnxruntime"]
    assert {"torch_b8_speedup", "onnxruntime_b1_candidate_p99_ms", "accuracy_drop"} <= set(evidence.metrics())
    assert "<h1>digits: run</h1>" in render(evidence, "digits: run")

    tags = steps.lineage_tags(evidence, RECIPE, "1", TASK)
    assert tags["runtime"] == "torch" and tags["gate"] == "passed" and tags["sparsity"] == f"{report['sparsity']:.4f}"
    assert tags["speedup"] == f"{evidence.validation.runtimes[0].batches[8].speedup.ratio:.4f}"
    series = steps.step_series(tmp_path / "tuned", evidence)
    assert series["prune_step_sparsity"] == [pytest.approx(0.5, abs=0.01)] and len(series["finetune_train_loss"]) == 1
