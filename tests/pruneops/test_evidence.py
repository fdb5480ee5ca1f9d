"""The typed evidence: what validate writes, register, the report and the summary read."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

from pruneops.bench import LatencyStats, Speedup
from pruneops.evidence import Evidence, GateEvidence, PruneEvidence, ValidationEvidence
from pruneops.gates import evaluate_gates
from pruneops.recipe import GatesSpec
from pruneops.steps import lineage_tags
from pruneops.validate import BatchResult, RuntimeResult, ValidationReport

pytestmark = pytest.mark.unit
#: evaluation.json of a digits version a demo registered before the evidence was typed.
BEFORE = Path(__file__).parent / "data" / "evidence-before-typed.json"


def test_evidence_registered_before_the_model_still_reads() -> None:
    raw = json.loads(BEFORE.read_text())
    evidence = Evidence.read(BEFORE)
    runtime = evidence.validation.runtimes[0]
    assert runtime.runtime == raw["validation"]["runtimes"][0]["runtime"] == "onnxruntime"
    assert sorted(runtime.batches) == [1, 32]  # JSON's string keys back as batch sizes
    assert runtime.offline.speedup.ratio == raw["validation"]["runtimes"][0]["batches"]["32"]["speedup"]["ratio"]
    assert evidence.gate.passed is raw["gate"]["passed"] is True
    assert evidence.prune.sparsity == raw["prune"]["sparsity"]
    assert (
        evidence.prune.model_extra is not None
        and evidence.prune.model_extra["params_after"] == raw["prune"]["params_after"]
    )  # keys the model does not name travel unchanged


def test_one_serialisation_round_trips() -> None:
    evidence = Evidence.read(BEFORE)
    assert Evidence.model_validate_json(evidence.model_dump_json()) == evidence


def test_metric_names_come_from_one_place() -> None:
    metrics = Evidence.read(BEFORE).metrics()
    assert {"accuracy_drop", "dense_accuracy", "candidate_accuracy", "onnxruntime_b1_speedup",
            "onnxruntime_b32_speedup", "onnxruntime_b32_candidate_p99_ms"} <= set(metrics)  # fmt: skip
    assert not [name for name in metrics if "_batch" in name]  # the KFP spelling that used to differ


def _stats(p50: float, batch: int = 8) -> LatencyStats:
    return LatencyStats(batch, 20, p50, p50, p50 * 1.5, p50, p50, batch / p50 * 1000)


def test_built_from_what_validate_and_the_gates_measured() -> None:
    report = ValidationReport("cpu", "x86", "accuracy", {"accuracy": 0.98}, {"accuracy": 0.97})
    report.runtimes.append(RuntimeResult("onnxruntime", "x86", {1: BatchResult(_stats(2.0, 1), _stats(1.0, 1),
                           Speedup(2.0, 1.9, 2.1)), 8: BatchResult(_stats(8.0), _stats(5.0), Speedup(1.6, 1.5, 1.7))},
                           {"candidate": {"provider": "CPUExecutionProvider"}}, 1000, 400))  # fmt: skip
    gate = evaluate_gates(*report.measured(), GatesSpec(max_accuracy_drop=0.005, min_speedup=1.2))
    evidence = Evidence(validation=ValidationEvidence.model_validate(report), gate=GateEvidence.model_validate(gate),
                        prune=PruneEvidence(method="wanda", pattern="2:4", sparsity=0.5))  # fmt: skip
    assert evidence.validation.accuracy_drop == pytest.approx(0.01)
    assert evidence.validation.runtimes[0].offline.candidate.p50_ms == 5.0
    assert not evidence.gate.passed and evidence.gate.reasons == gate.reasons
    assert evidence.metrics()["onnxruntime_b8_speedup"] == 1.6
    tags = lineage_tags(evidence, _recipe(), "1", "pruneops.tasks.digits:task")
    assert tags["speedup"] == "1.6000" and tags["gate"] == "failed" and tags["accuracy"] == "0.970000"


def _recipe():  # type: ignore[no-untyped-def]
    from pruneops.recipe import parse_recipe

    return parse_recipe({"prune": {"method": "wanda", "pattern": "2:4"}})


def test_malformed_evidence_is_refused_before_anything_reads_it(tmp_path: Path) -> None:
    raw = json.loads(BEFORE.read_text())
    del raw["gate"]
    (tmp_path / "evidence.json").write_text(json.dumps(raw))
    with pytest.raises(pydantic.ValidationError, match="gate"):
        Evidence.read(tmp_path)
