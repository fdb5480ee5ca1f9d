"""A pipeline run's evidence, typed once: what validate measured and what the gates decided.

The validate step builds an :class:`Evidence` and writes it once (``evidence.json``); the
register step, the HTML run report, the run summary and the KFP component's metrics read it
back as this model, so each field is spelled in one place. Metric names (MLflow's and KFP's)
come from :meth:`Evidence.metrics` alone. The JSON keeps the shape versions registered before
this model carry, so their evidence still reads.

>>> stats = {"batch_size": 32, "iterations": 50, "p50_ms": 4.0, "p90_ms": 4.4, "p99_ms": 5.0,
...          "mean_ms": 4.1, "min_ms": 3.9, "throughput": 8000.0}
>>> evidence = Evidence.model_validate({
...     "validation": {"target": "cpu", "device": "x86", "primary_metric": "accuracy", "accuracy_drop": 0.01,
...                    "dense_metrics": {"accuracy": 0.98}, "candidate_metrics": {"accuracy": 0.97},
...                    "runtimes": [{"runtime": "onnxruntime", "device": "x86", "evidence": {},
...                                  "dense_bytes": 100, "candidate_bytes": 50,
...                                  "batches": {"32": {"dense": stats, "candidate": stats | {"p99_ms": 2.5},
...                                                     "speedup": {"ratio": 1.6, "p10": 1.5, "p90": 1.7}}}}]},
...     "gate": {"passed": True, "reasons": [], "checks": []},
...     "prune": {"method": "magnitude", "pattern": "channels", "sparsity": 0.5}})
>>> evidence.validation.runtimes[0].offline.speedup.ratio
1.6
>>> evidence.metrics()["onnxruntime_b32_speedup"], evidence.metrics()["onnxruntime_b32_candidate_p99_ms"]
(1.6, 2.5)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from pruneops.gates import GateCheck  # a dataclass pydantic validates and writes as it is

#: The file the validate step writes into its evidence folder.
EVIDENCE_FILE = "evidence.json"


class _Record(BaseModel):
    # Read from the measuring dataclasses (validate, gates, bench) by attribute.
    model_config = ConfigDict(from_attributes=True, frozen=True)


class Latency(_Record):
    """One contender's latency at one batch size (``pruneops.bench.LatencyStats``)."""

    batch_size: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput: float


class Speedup(_Record):
    """Median latency of dense over candidate, with its 10th-90th percentile spread."""

    ratio: float
    p10: float
    p90: float


class BatchFigures(_Record):
    dense: Latency
    candidate: Latency
    speedup: Speedup


class RuntimeEvidence(_Record):
    """One runtime: figures per batch size, what ran (its evidence), and bytes held."""

    runtime: str
    device: str
    batches: dict[int, BatchFigures]
    evidence: dict[str, Any]
    dense_bytes: int | None = None
    candidate_bytes: int | None = None
    peak_memory_bytes: dict[str, int | None] = {}

    @property
    def offline(self) -> BatchFigures:
        """The largest batch: the Offline scenario that speedup gates and the ``speedup`` tag use."""
        return self.batches[max(self.batches)]


class ValidationEvidence(_Record):
    """Accuracy of both models, and every runtime measured (or why it could not run)."""

    target: str
    device: str
    primary_metric: str
    accuracy_drop: float
    dense_metrics: dict[str, float]
    candidate_metrics: dict[str, float]
    runtimes: list[RuntimeEvidence] = []
    unavailable: dict[str, str] = {}
    sizes: dict[str, int] = {}

    @property
    def dense_score(self) -> float:
        return self.dense_metrics[self.primary_metric]

    @property
    def candidate_score(self) -> float:
        return self.candidate_metrics[self.primary_metric]


class GateEvidence(_Record):
    """The verdict, and each gate with the sentence that explains it."""

    passed: bool
    reasons: list[str]
    checks: list[GateCheck]


class OnnxEvidence(_Record):
    """The ONNX file that ships with the version, and its parity with the torch model."""

    bytes: int
    opset: int
    max_abs: float
    max_rel: float


class PruneEvidence(BaseModel):
    """The prune step's report (``PruneReport``), with the schedule's steps; other keys kept as they are."""

    model_config = ConfigDict(extra="allow", frozen=True)

    method: str
    pattern: str
    sparsity: float
    layers: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []


class Evidence(_Record):
    """Everything a pipeline run proved about one candidate."""

    validation: ValidationEvidence
    gate: GateEvidence
    prune: PruneEvidence
    onnx: OnnxEvidence | None = None

    def metrics(self) -> dict[str, float]:
        """The run's metrics by name, for MLflow and for KFP's metrics artifact.

        ``dense_<metric>``, ``candidate_<metric>``, ``accuracy_drop``, and per runtime and batch
        size ``<runtime>_b<batch>_speedup`` and ``<runtime>_b<batch>_candidate_p99_ms``.
        """
        validation = self.validation
        metrics = {f"dense_{name}": value for name, value in validation.dense_metrics.items()}
        metrics |= {f"candidate_{name}": value for name, value in validation.candidate_metrics.items()}
        metrics["accuracy_drop"] = validation.accuracy_drop
        for runtime in validation.runtimes:
            for batch, figures in sorted(runtime.batches.items()):
                metrics[f"{runtime.runtime}_b{batch}_speedup"] = figures.speedup.ratio
                metrics[f"{runtime.runtime}_b{batch}_candidate_p99_ms"] = figures.candidate.p99_ms
        return metrics

    def write(self, folder: str | Path) -> Path:
        """Write ``evidence.json`` into ``folder``: the one serialisation every reader parses."""
        path = Path(folder) / EVIDENCE_FILE
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def read(cls, path: str | Path) -> Evidence:
        """Parse an evidence file, or the ``evidence.json`` in a folder."""
        path = Path(path)
        return cls.model_validate_json((path / EVIDENCE_FILE if path.is_dir() else path).read_text())
