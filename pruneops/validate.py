"""Validate a candidate on the target: accuracy, interleaved latency per runtime, sizes, evidence.

For each runtime the recipe names, the dense model and the candidate are loaded into that
runtime and measured in one process, taking turns (``pruneops.bench``), at every batch
size: batch 1 is the SingleStream scenario, larger batches the Offline one. A runtime that
cannot run here is recorded with its reason (and fails the gate); nothing else is measured
in its place.

Usage::

    report = validate(dense, candidate, task, recipe.validate_, workdir)
    result = evaluate_gates(*report.measured(), recipe.gates)
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneops.bench import (
    LatencyStats,
    Speedup,
    compressed_2to4_bytes,
    cuda_peak_memory,
    dense_bytes,
    measure_interleaved,
    speedup,
    summarize,
)
from pruneops.errors import RuntimeUnavailable
from pruneops.gates import Measured, RuntimeMeasure
from pruneops.pruning.masks import satisfies_nm
from pruneops.recipe import ValidateSpec
from pruneops.runtimes import device_name, get_runtime
from pruneops.tasks import Task


@dataclass
class BatchResult:
    dense: LatencyStats
    candidate: LatencyStats
    speedup: Speedup


@dataclass
class RuntimeResult:
    """One runtime: per-batch figures, evidence of what ran, and bytes held."""

    runtime: str
    device: str
    batches: dict[int, BatchResult]
    evidence: dict[str, Any]
    dense_bytes: int | None
    candidate_bytes: int | None
    #: Peak CUDA memory while running the Offline batch; None on CPU (not measured there).
    peak_memory_bytes: dict[str, int | None] = field(default_factory=dict)

    @property
    def offline(self) -> BatchResult:
        """The largest batch: the Offline scenario that speedup gates use."""
        return self.batches[max(self.batches)]

    @property
    def single_stream(self) -> BatchResult:
        """The smallest batch: the SingleStream scenario that p99 gates use."""
        return self.batches[min(self.batches)]


@dataclass
class ValidationReport:
    """Everything validate measured; ``measured()`` gives the two sides the gates compare.

    Recorded as :class:`pruneops.evidence.ValidationEvidence`, which reads it by attribute.
    """

    target: str
    device: str
    primary_metric: str
    dense_metrics: dict[str, float]
    candidate_metrics: dict[str, float]
    runtimes: list[RuntimeResult] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def accuracy_drop(self) -> float:
        return self.dense_metrics[self.primary_metric] - self.candidate_metrics[self.primary_metric]

    def measured(self) -> tuple[Measured, Measured]:
        """(baseline, candidate) for :func:`pruneops.gates.evaluate_gates`."""

        def side(which: str) -> Measured:
            metrics = self.dense_metrics if which == "dense" else self.candidate_metrics
            runtimes = {
                r.runtime: RuntimeMeasure(
                    r.device, getattr(r.offline, which).throughput, getattr(r.single_stream, which).p99_ms
                )
                for r in self.runtimes
            }
            held = [getattr(r, f"{which}_bytes") for r in self.runtimes if getattr(r, f"{which}_bytes")]
            size = min(held) if held else self.sizes.get(f"{which}_bytes")
            return Measured(metrics[self.primary_metric], runtimes, size, dict(self.unavailable))

        return side("dense"), side("candidate")


def validate(
    dense: nn.Module,
    candidate: nn.Module,
    task: Task,
    spec: ValidateSpec,
    workdir: str | Path | None = None,
) -> ValidationReport:
    """Measure ``candidate`` against ``dense`` as ``spec`` says (neither model is changed).

    >>> import copy
    >>> from pruneops.modelio import build_model
    >>> from pruneops.pruning import MagnitudeConfig, make_permanent, prune_
    >>> from pruneops.recipe import ValidateSpec
    >>> from pruneops.tasks.digits import task
    >>> dense = build_model(task.arch)
    >>> candidate = copy.deepcopy(dense)
    >>> _ = prune_(candidate, MagnitudeConfig(sparsity=0.5)); make_permanent(candidate)
    >>> spec = ValidateSpec(runtimes=["torch", "onnxruntime"], batch_sizes=[1, 8], iterations=5, warmup=1)
    >>> report = validate(dense, candidate, task, spec)
    >>> [(r.runtime, sorted(r.batches)) for r in report.runtimes], report.primary_metric
    ([('torch', [1, 8]), ('onnxruntime', [1, 8])], 'accuracy')
    >>> report.sizes["candidate_bytes"] == report.sizes["dense_bytes"]  # unstructured: same shapes
    True
    """
    report = ValidationReport(
        target=spec.target,
        device=device_name(spec.target),
        primary_metric=task.primary_metric,
        dense_metrics=task.evaluate(dense),
        candidate_metrics=task.evaluate(candidate),
        sizes={"dense_bytes": dense_bytes(dense), "candidate_bytes": dense_bytes(candidate)},
    )
    if any(isinstance(m, nn.Linear) and satisfies_nm(m.weight, 2, 4) for m in candidate.modules()):
        report.sizes["candidate_2to4_fp16_bytes"] = compressed_2to4_bytes(candidate)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(workdir) if workdir is not None else Path(scratch)
        for name in spec.runtimes:
            try:
                runtime = get_runtime(name, spec.target)
            except RuntimeUnavailable as err:
                report.unavailable[name] = str(err)
                continue
            report.runtimes.append(_measure(runtime, dense, candidate, task, spec, root / name))
    return report


def measured_onnx(workdir: str | Path) -> Path | None:
    """The candidate's ONNX file that ONNX Runtime was measured on, in a :func:`validate` ``workdir``.

    ``None`` when ONNX Runtime was not among the runtimes (or was unavailable).

    >>> measured_onnx("/nonexistent") is None
    True
    """
    path = Path(workdir) / "onnxruntime" / "candidate.onnx"  # _measure's folder, OnnxRuntime.load's name
    return path if path.is_file() else None


def _measure(
    runtime: Any, dense: nn.Module, candidate: nn.Module, task: Task, spec: ValidateSpec, folder: Path
) -> RuntimeResult:
    folder.mkdir(parents=True, exist_ok=True)
    example = task.example_input(2)
    sessions = {
        "dense": runtime.load(dense, example, folder, name="dense"),
        "candidate": runtime.load(candidate, example, folder, name="candidate"),
    }
    sync = torch.cuda.synchronize if spec.target == "cuda" else None
    batches = {}
    for batch_size in sorted(set(spec.batch_sizes)):
        inputs = _batch(task, batch_size)
        samples = measure_interleaved(
            {name: functools.partial(session.run, inputs) for name, session in sessions.items()},
            spec.warmup,
            spec.iterations,
            sync,
        )
        batches[batch_size] = BatchResult(
            summarize(samples["dense"], batch_size),
            summarize(samples["candidate"], batch_size),
            speedup(samples["dense"], samples["candidate"]),
        )
    largest = _batch(task, max(spec.batch_sizes))
    peak = {
        name: cuda_peak_memory(functools.partial(session.run, largest)) if spec.target == "cuda" else None
        for name, session in sessions.items()
    }
    return RuntimeResult(
        runtime=runtime.name,
        device=device_name(spec.target),
        batches=batches,
        evidence={"dense": sessions["dense"].evidence, "candidate": sessions["candidate"].evidence},
        dense_bytes=sessions["dense"].model_bytes(),
        candidate_bytes=sessions["candidate"].model_bytes(),
        peak_memory_bytes=peak,
    )


def _batch(task: Task, batch_size: int) -> torch.Tensor:
    """A real batch of ``batch_size`` inputs (repeating the held-out examples if there are few)."""
    first = task.example_input(batch_size)
    if len(first) >= batch_size:
        return first[:batch_size].contiguous()
    repeats = -(-batch_size // len(first))
    return first.repeat(repeats, *([1] * (first.dim() - 1)))[:batch_size].contiguous()
