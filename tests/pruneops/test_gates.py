"""Every gate, passing and failing, with the sentence a person reads."""

from __future__ import annotations

import pytest

from pruneops.evidence import GateEvidence
from pruneops.gates import Measured, RuntimeMeasure, evaluate_gates
from pruneops.recipe import GatesSpec

pytestmark = pytest.mark.unit

H100 = "NVIDIA H100"


def measured(primary: float, throughput: float = 1000.0, p99: float = 2.0, size: int | None = 4_000_000) -> Measured:
    return Measured(primary, {"torch-sparse": RuntimeMeasure(H100, throughput, p99)}, size)


def test_all_pass() -> None:
    gates = GatesSpec(max_accuracy_drop=0.01, min_speedup=1.1, max_p99_ms=2, max_size_mb=3)
    result = evaluate_gates(measured(0.99), measured(0.985, 1200, 1.5, 2_000_000), gates)
    assert result.passed and result.reasons == []
    assert [c.gate for c in result.checks] == ["max_accuracy_drop", "min_speedup", "max_p99_ms", "max_size_mb"]
    assert GateEvidence.model_validate(result).passed is True  # as the evidence records it


def test_accuracy_drop() -> None:
    result = evaluate_gates(measured(0.99), measured(0.975), GatesSpec(max_accuracy_drop=0.01))
    assert result.reasons == ["accuracy drop 0.0150 > allowed 0.0100 (0.9750 vs dense 0.9900)"]


def test_speedup_reason_names_runtime_and_device() -> None:
    result = evaluate_gates(measured(0.99), measured(0.99, 1040), GatesSpec(min_speedup=1.1))
    assert result.reasons == ["speedup 1.04x < required 1.10x on torch-sparse/NVIDIA H100"]


def test_speedup_per_runtime_needs_a_measurement() -> None:
    result = evaluate_gates(measured(0.99), measured(0.99, 1500), GatesSpec(min_speedup={"onnxruntime": 1.2}))
    assert result.reasons == ["no measurement on onnxruntime to check speedup >= 1.20x"]


def test_p99() -> None:
    result = evaluate_gates(measured(0.99), measured(0.99, p99=63.2), GatesSpec(max_p99_ms=50))
    assert result.reasons == ["p99 63.20 ms > allowed 50.00 ms on torch-sparse/NVIDIA H100"]


def test_size() -> None:
    result = evaluate_gates(measured(0.99), measured(0.99, size=12_300_000), GatesSpec(max_size_mb=10))
    assert result.reasons == ["size 12.30 MB > allowed 10.00 MB"]
    unknown = evaluate_gates(measured(0.99), measured(0.99, size=None), GatesSpec(max_size_mb=10))
    assert unknown.reasons == ["size unknown: no runtime reported the model's bytes"]


def test_unavailable_runtime_fails_with_its_reason() -> None:
    candidate = Measured(0.99, {}, None, {"torch-sparse": "no CUDA device on this machine"})
    result = evaluate_gates(Measured(0.99), candidate, GatesSpec(min_speedup={"torch-sparse": 1.1}))
    assert result.reasons == [
        "runtime torch-sparse unavailable: no CUDA device on this machine",
        "no measurement on torch-sparse to check speedup >= 1.10x",
    ]


def test_several_failures_listed_together() -> None:
    result = evaluate_gates(measured(0.99), measured(0.9, 900, 80), GatesSpec(min_speedup=1.1, max_p99_ms=50))
    assert not result.passed and len(result.reasons) == 3
