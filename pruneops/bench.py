"""Latency harness: A and B measured interleaved in one process, reported as ratios with spread.

Machines here are shared and noisy, so the dense model and the candidate take turns: each
round runs every contender once, in an order that rotates from round to round, so drift in
the machine's speed hits all of them alike. Scenarios follow MLPerf's names:

- **SingleStream**: batch 1, one query at a time; p50/p90/p99 latency.
- **Offline**: a batch of B; throughput (items per second) from the median batch latency.

``speedup`` reports the ratio of medians and the spread (p10 to p90) of the per-round
ratios. CUDA work is synchronised before each clock read. Imports only torch and numpy.

>>> import time
>>> samples = measure_interleaved({"a": lambda: time.sleep(0.001), "b": lambda: time.sleep(0.002)}, 2, 20)
>>> 1.5 < speedup(samples["b"], samples["a"]).ratio < 2.5
True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles of one contender's batch latency, in milliseconds, and its throughput."""

    batch_size: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Speedup:
    """How much faster the candidate is: ``baseline / candidate`` of median latency."""

    ratio: float
    p10: float
    p90: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(samples_s: list[float], batch_size: int) -> LatencyStats:
    """Percentiles and throughput of latency samples given in seconds.

    >>> summarize([0.001, 0.002, 0.003], 2).p50_ms
    2.0
    """
    ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    p50 = float(np.percentile(ms, 50))
    return LatencyStats(
        batch_size=batch_size,
        iterations=len(ms),
        p50_ms=p50,
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
        throughput=batch_size / (p50 / 1000.0) if p50 > 0 else float("inf"),
    )


def measure_interleaved(
    contenders: dict[str, Callable[[], Any]],
    warmup: int,
    iterations: int,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Run each contender ``warmup`` times, then ``iterations`` rounds taking turns; seconds per call.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before every clock read, so a call's time
    includes the device work it queued.

    >>> samples = measure_interleaved({"a": lambda: sum(range(100)), "b": lambda: None}, warmup=1, iterations=5)
    >>> sorted(samples), len(samples["a"]), all(t >= 0 for t in samples["b"])
    (['a', 'b'], 5, True)
    """
    names = list(contenders)
    wait = sync or (lambda: None)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    wait()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(iterations):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            contenders[name]()
            wait()
            samples[name].append(time.perf_counter() - start)
    return samples


def speedup(baseline: list[float], candidate: list[float]) -> Speedup:
    """Ratio of median latencies and the p10-p90 spread of per-round ratios (same round = same conditions).

    >>> speedup([0.004, 0.004, 0.004], [0.002, 0.002, 0.002]).ratio
    2.0
    """
    base, cand = np.asarray(baseline), np.asarray(candidate)
    per_round = base[: len(cand)] / cand[: len(base)]
    return Speedup(
        ratio=float(np.median(base) / np.median(cand)),
        p10=float(np.percentile(per_round, 10)),
        p90=float(np.percentile(per_round, 90)),
    )


def dense_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer as stored (fp32 weights count 4 bytes each).

    >>> dense_bytes(nn.Linear(4, 2))  # 8 weights + 2 biases, 4 bytes each
    40
    """
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def compressed_2to4_bytes(model: nn.Module, itemsize: int = 2) -> int:
    """Estimated bytes with every 2:4 Linear weight compressed, at ``itemsize`` bytes per value.

    A 2:4 weight keeps half its values plus 2 bits of position metadata per kept value
    (NVIDIA's format: 56.25% of the dense fp16 size). Everything else counts dense at
    ``itemsize``. The torch-sparse runtime measures the real packed size on a GPU.

    >>> layer = nn.Linear(8, 4, bias=False)
    >>> dense_fp16 = compressed_2to4_bytes(layer)
    >>> with torch.no_grad():
    ...     _ = layer.weight.mul_(torch.tensor([1.0, 1.0, 0.0, 0.0]).repeat(4, 2))
    >>> dense_fp16, compressed_2to4_bytes(layer)  # 32 values at 2 bytes; then 56.25% of that
    (64, 36)
    """
    from pruneops.pruning.masks import satisfies_nm

    total = 0
    for module in model.modules():
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            numel = tensor.numel()
            if isinstance(module, nn.Linear) and name == "weight" and satisfies_nm(tensor, 2, 4):
                total += numel // 2 * itemsize + numel // 2 * 2 // 8
            else:
                total += numel * itemsize
    return total


def cuda_peak_memory(run: Callable[[], Any]) -> int | None:
    """Peak CUDA memory allocated while ``run`` executes, or None without CUDA.

    >>> peak = cuda_peak_memory(lambda: torch.ones(1024, device="cuda"))
    >>> peak is None if not torch.cuda.is_available() else peak >= 4096
    True
    """
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())


def cpu_environment() -> dict[str, Any]:
    """Where a CPU benchmark ran, for its JSON: device, threads, platform, runtime versions.

    >>> sorted(cpu_environment())
    ['cpu_count', 'device', 'onnxruntime', 'platform', 'torch']
    """
    import platform

    import onnxruntime as ort
    import torch

    from pruneops.runtimes import device_name

    return {
        "device": device_name("cpu"),
        "cpu_count": torch.get_num_threads(),
        "platform": platform.platform(),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
    }
