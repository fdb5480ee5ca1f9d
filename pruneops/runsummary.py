"""What a pipeline run ended with, for a person: version, alias, gate and every reason,
accuracy, speedup per runtime and batch, and where the HTML report is.

Read back from the registry (the version's tags and its ``report/evaluation.json``), so a
summary says what was recorded, not what the run meant to record.

>>> summary = RunSummary("digits", "2", "1", ("challenger",), "passed", [], "accuracy", 0.97, 0.96,
...                      0.01, 0.5, [Speedup("onnxruntime", 64, 1.0, 0.5, 2.0)], "/tmp/report.html")
>>> print("\\n".join(summary.lines()))
digits v2 (from v1): gate passed, alias challenger
accuracy 0.9600 (dense 0.9700, drop 0.0100), sparsity 0.50
speedup onnxruntime batch 64: 2.00x (p50 1.000 -> 0.500 ms)
report: /tmp/report.html
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

from pruneops.evidence import Evidence, ValidationEvidence
from pruneops.layout import REPORT_DIR, REPORT_FILE
from pruneops.registry import Registry


@dataclass(frozen=True)
class Speedup:
    """Median latency of dense and candidate at one runtime and batch, and their ratio."""

    runtime: str
    batch: int
    dense_p50_ms: float
    candidate_p50_ms: float
    ratio: float


@dataclass(frozen=True)
class RunSummary:
    """The closing summary of one run (:func:`summarize`)."""

    model: str
    version: str
    parent_version: str | None
    aliases: tuple[str, ...]
    gate: str
    reasons: list[str]
    metric: str
    dense: float
    candidate: float
    accuracy_drop: float
    sparsity: float
    speedups: list[Speedup] = field(default_factory=list)
    report: str | None = None

    def lines(self) -> list[str]:
        """The summary as plain lines (no table: readable at any width, and in a log)."""
        alias = f"alias {', '.join(self.aliases)}" if self.aliases else "no alias"
        parent = f" (from v{self.parent_version})" if self.parent_version else ""
        out = [
            f"{self.model} v{self.version}{parent}: gate {self.gate}, {alias}",
            f"{self.metric} {self.candidate:.4f} (dense {self.dense:.4f}, drop {self.accuracy_drop:.4f}), "
            f"sparsity {self.sparsity:.2f}",
        ]
        out += [f"gate reason: {reason}" for reason in self.reasons]
        out += [
            f"speedup {s.runtime} batch {s.batch}: {s.ratio:.2f}x "
            f"(p50 {s.dense_p50_ms:.3f} -> {s.candidate_p50_ms:.3f} ms)"
            for s in self.speedups
        ]
        out.append(f"report: {self.report or 'none recorded'}")
        return out


def speedups(validation: ValidationEvidence) -> list[Speedup]:
    """Every runtime and batch a validation measured: runtimes in the order measured, batches ascending.

    >>> stats = {"batch_size": 1, "iterations": 9, "p50_ms": 2.0, "p90_ms": 2.0, "p99_ms": 2.0, "mean_ms": 2.0,
    ...          "min_ms": 2.0, "throughput": 500.0}
    >>> row = {"dense": stats, "candidate": stats | {"p50_ms": 1.0}, "speedup": {"ratio": 2.0, "p10": 2, "p90": 2}}
    >>> validation = ValidationEvidence.model_validate({"target": "cpu", "device": "cpu", "primary_metric": "acc",
    ...     "accuracy_drop": 0.0, "dense_metrics": {}, "candidate_metrics": {},
    ...     "runtimes": [{"runtime": "torch", "device": "cpu", "evidence": {}, "batches": {"1": row}}]})
    >>> speedups(validation)
    [Speedup(runtime='torch', batch=1, dense_p50_ms=2.0, candidate_p50_ms=1.0, ratio=2.0)]
    """
    return [
        Speedup(r.runtime, batch, row.dense.p50_ms, row.candidate.p50_ms, row.speedup.ratio)
        for r in validation.runtimes
        for batch, row in sorted(r.batches.items())
    ]


def summarize(registry: Registry, model: str, version: str) -> RunSummary:
    """Read a pipeline-made version's summary from the registry.

    >>> import os
    >>> from pathlib import Path
    >>> from pruneops import steps
    >>> from pruneops.modelio import build_model, save_model
    >>> from pruneops.onboard import register_source
    >>> from pruneops.recipe import parse_recipe
    >>> from pruneops.tasks.digits import task
    >>> os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db"
    >>> tmp, model, task_path = Path(tempfile.mkdtemp()), build_model(task.arch), "pruneops.tasks.digits:task"
    >>> source = register_source(Registry(), "digits", model, task.arch, task, task_path)
    >>> dense = save_model(model, tmp / "dense", task.arch, probe=task.probe(model))
    >>> recipe = parse_recipe({
    ...     "prune": {"sparsity": 0.5},
    ...     "validate": {"runtimes": ["torch"], "batch_sizes": [8], "iterations": 5, "warmup": 1},
    ...     "gates": {"max_accuracy_drop": 1.0},
    ... })
    >>> _ = steps.prune(dense, recipe, task_path, tmp / "pruned")
    >>> _ = steps.validate(dense, tmp / "pruned", recipe, task_path, tmp / "evidence")
    >>> version = steps.register("digits", "1", tmp / "pruned", tmp / "evidence", recipe, task_path)
    >>> summary = summarize(Registry(), "digits", version)
    >>> summary.lines()[0]
    'digits v2 (from v1): gate passed, no alias'
    >>> summary.sparsity
    0.5
    >>> del os.environ["MLFLOW_TRACKING_URI"]
    """
    info = registry.version(model, version)
    with tempfile.TemporaryDirectory() as tmp:
        # Only the evidence file: the report folder also holds the HTML page and its plots.
        evidence_file = registry.download(model, info.version, tmp, part=f"{REPORT_DIR}/{REPORT_FILE}")
        evidence = Evidence.read(evidence_file)
    validation, gate = evidence.validation, evidence.gate
    return RunSummary(
        model=model,
        version=info.version,
        parent_version=info.tag("parent_version"),
        aliases=info.aliases,
        gate="passed" if gate.passed else "failed",
        reasons=list(gate.reasons),
        metric=validation.primary_metric,
        dense=validation.dense_score,
        candidate=validation.candidate_score,
        accuracy_drop=validation.accuracy_drop,
        sparsity=evidence.prune.sparsity,
        speedups=speedups(validation),
        report=registry.report_location(info),
    )
