"""Gates: what must hold before a candidate may become the challenger, with readable reasons.

>>> from pruneops.recipe import GatesSpec
>>> dense = Measured(primary=0.99, runtimes={"torch-sparse": RuntimeMeasure("NVIDIA H100", 1000.0, 2.0)})
>>> cand = Measured(primary=0.985, runtimes={"torch-sparse": RuntimeMeasure("NVIDIA H100", 1040.0, 1.9)})
>>> result = evaluate_gates(dense, cand, GatesSpec(max_accuracy_drop=0.01, min_speedup=1.1))
>>> result.passed, result.reasons
(False, ['speedup 1.04x < required 1.10x on torch-sparse/NVIDIA H100'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pruneops.recipe import GatesSpec


@dataclass(frozen=True)
class RuntimeMeasure:
    """One runtime's figures for gating: Offline throughput (largest batch) and SingleStream p99."""

    device: str
    throughput: float
    p99_ms: float


@dataclass(frozen=True)
class Measured:
    """What gates compare: the primary metric, per-runtime speed, and the deployable size."""

    primary: float
    runtimes: dict[str, RuntimeMeasure] = field(default_factory=dict)
    size_bytes: int | None = None
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GateCheck:
    """One gate: its name, whether it held, and a sentence a person can read."""

    gate: str
    passed: bool
    message: str


@dataclass(frozen=True)
class GateResult:
    """Every check, and ``passed`` only if all held."""

    checks: list[GateCheck]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def reasons(self) -> list[str]:
        """Why the gate failed (empty when it passed)."""
        return [check.message for check in self.checks if not check.passed]


def evaluate_gates(baseline: Measured, candidate: Measured, gates: GatesSpec) -> GateResult:
    """Check the candidate against the dense baseline under the recipe's gates.

    >>> from pruneops.recipe import GatesSpec
    >>> dense = Measured(0.98, {"onnxruntime": RuntimeMeasure("cpu", 1000.0, 2.0)}, 4_000_000)
    >>> pruned = Measured(0.97, {"onnxruntime": RuntimeMeasure("cpu", 1200.0, 1.8)}, 2_000_000)
    >>> result = evaluate_gates(dense, pruned, GatesSpec(max_accuracy_drop=0.02, min_speedup=1.5))
    >>> result.passed, result.reasons
    (False, ['speedup 1.20x < required 1.50x on onnxruntime/cpu'])
    """
    checks = [_accuracy(baseline, candidate, gates.max_accuracy_drop)]
    for name, reason in sorted(candidate.unavailable.items()):
        checks.append(GateCheck("runtime", False, f"runtime {name} unavailable: {reason}"))
    if gates.min_speedup is not None:
        required = (
            gates.min_speedup
            if isinstance(gates.min_speedup, dict)
            else dict.fromkeys(candidate.runtimes, gates.min_speedup)
        )
        for runtime, minimum in sorted(required.items()):
            checks.append(_speedup(baseline, candidate, runtime, minimum))
    if gates.max_p99_ms is not None:
        for runtime, measure in sorted(candidate.runtimes.items()):
            ok = measure.p99_ms <= gates.max_p99_ms
            sign = "<=" if ok else ">"
            where = f"{runtime}/{measure.device}"
            message = f"p99 {measure.p99_ms:.2f} ms {sign} allowed {gates.max_p99_ms:.2f} ms on {where}"
            checks.append(GateCheck("max_p99_ms", ok, message))
    if gates.max_size_mb is not None:
        if candidate.size_bytes is None:
            checks.append(GateCheck("max_size_mb", False, "size unknown: no runtime reported the model's bytes"))
        else:
            size_mb = candidate.size_bytes / 1e6
            ok = size_mb <= gates.max_size_mb
            checks.append(
                GateCheck(
                    "max_size_mb", ok, f"size {size_mb:.2f} MB {'<=' if ok else '>'} allowed {gates.max_size_mb:.2f} MB"
                )
            )
    return GateResult(checks)


def _accuracy(baseline: Measured, candidate: Measured, allowed: float) -> GateCheck:
    drop = baseline.primary - candidate.primary
    ok = drop <= allowed + 1e-12
    return GateCheck(
        "max_accuracy_drop",
        ok,
        f"accuracy drop {drop:.4f} {'<=' if ok else '>'} allowed {allowed:.4f} "
        f"({candidate.primary:.4f} vs dense {baseline.primary:.4f})",
    )


def _speedup(baseline: Measured, candidate: Measured, runtime: str, minimum: float) -> GateCheck:
    base, cand = baseline.runtimes.get(runtime), candidate.runtimes.get(runtime)
    if base is None or cand is None:
        return GateCheck("min_speedup", False, f"no measurement on {runtime} to check speedup >= {minimum:.2f}x")
    ratio = cand.throughput / base.throughput
    ok = ratio >= minimum
    return GateCheck(
        "min_speedup",
        ok,
        f"speedup {ratio:.2f}x {'>=' if ok else '<'} required {minimum:.2f}x on {runtime}/{cand.device}",
    )
