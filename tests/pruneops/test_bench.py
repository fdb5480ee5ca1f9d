"""The latency harness on workloads whose timing is known: sleeps."""

from __future__ import annotations

import time

import pytest
import torch

from pruneops.bench import compressed_2to4_bytes, dense_bytes, measure_interleaved, speedup, summarize
from pruneops.pruning import MagnitudeConfig, make_permanent, prune_

pytestmark = pytest.mark.unit


def test_sleep_statistics() -> None:
    samples = measure_interleaved({"sleep2": lambda: time.sleep(0.002)}, warmup=2, iterations=40)
    stats = summarize(samples["sleep2"], batch_size=4)
    assert stats.iterations == 40
    assert 2.0 <= stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.p50_ms < 6.0  # sleep overshoots a little, never by milliseconds on an idle core
    assert stats.throughput == pytest.approx(4 / (stats.p50_ms / 1000))


def test_ratio_of_known_workloads() -> None:
    samples = measure_interleaved(
        {"slow": lambda: time.sleep(0.004), "fast": lambda: time.sleep(0.002)}, warmup=2, iterations=30
    )
    result = speedup(samples["slow"], samples["fast"])
    assert 1.5 < result.ratio < 2.3
    assert result.p10 <= result.ratio <= result.p90 or result.p10 <= result.p90


def test_turns_rotate_and_sync_runs_before_each_clock_read() -> None:
    calls: list[str] = []
    syncs: list[int] = []
    measure_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b"), "c": lambda: calls.append("c")},
        warmup=0,
        iterations=3,
        sync=lambda: syncs.append(len(calls)),
    )
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert len(syncs) == 1 + 9  # once after warm-up, then after every call


def test_percentiles_of_fixed_samples() -> None:
    stats = summarize([i / 1000 for i in range(1, 101)], batch_size=1)
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)


def test_model_bytes() -> None:
    layer = torch.nn.Linear(64, 32, bias=False)
    assert dense_bytes(layer) == 64 * 32 * 4
    assert compressed_2to4_bytes(layer) == 64 * 32 * 2  # not 2:4: dense at 2 bytes per value
    prune_(layer, MagnitudeConfig(pattern="2:4"))
    make_permanent(layer)
    # Half the values at 2 bytes, plus 2 bits of metadata per kept value: 56.25% of dense fp16.
    assert compressed_2to4_bytes(layer) == int(64 * 32 * 2 * 0.5625)
