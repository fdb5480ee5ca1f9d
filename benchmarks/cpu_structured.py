"""Structured (channel) pruning on CPU: dense vs 50% channels on ONNX Runtime, interleaved.

Models: the trained digits CNN, and a wider ResNet-style CNN (64-128-256-512, 2 blocks per
stage, random weights, 3x64x64 inputs). Batch 1 (SingleStream) and 32 (Offline). Reports
median latencies, the speedup with its p10-p90 spread, the MAC reduction, and efficiency =
speedup / MAC reduction (1.0 means latency fell exactly as much as the arithmetic).
Goal from the issue: >= 2x lower latency and efficiency >= 0.6.

Writes ``benchmarks/results/cpu_structured.json``. Run: ``.venv/bin/python benchmarks/cpu_structured.py``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneops.bench import cpu_environment, measure_interleaved, speedup, summarize
from pruneops.models.resnet import build as build_resnet
from pruneops.pruning import MagnitudeConfig, prune_
from pruneops.pruning.api import count_macs
from pruneops.runtimes import get_runtime
from pruneops.tasks.digits import task

RESULTS = Path(__file__).parent / "results"


def compare(name: str, dense: nn.Module, example: torch.Tensor, iterations: int, warmup: int) -> dict[str, Any]:
    candidate = copy.deepcopy(dense)
    report = prune_(candidate, MagnitudeConfig(pattern="channels", sparsity=0.5), example_inputs=example[:1])
    runtime = get_runtime("onnxruntime", "cpu")
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {
            "dense": runtime.load(dense, example[:2], Path(tmp), name="dense"),
            "candidate": runtime.load(candidate, example[:2], Path(tmp), name="candidate"),
        }
        for batch_size in (1, 32):
            x = example[:batch_size].contiguous()
            samples = measure_interleaved(
                {k: functools.partial(s.run, x) for k, s in sessions.items()}, warmup=warmup, iterations=iterations
            )
            ratio = speedup(samples["dense"], samples["candidate"])
            macs_dense, macs_pruned = count_macs(dense, x), count_macs(candidate, x)
            assert macs_dense and macs_pruned
            reduction = macs_dense / macs_pruned
            rows[str(batch_size)] = {
                "dense": summarize(samples["dense"], batch_size).to_dict(),
                "candidate": summarize(samples["candidate"], batch_size).to_dict(),
                "speedup": ratio.to_dict(),
                "mac_reduction": reduction,
                "efficiency": ratio.ratio / reduction,
            }
            print(
                f"{name:>10} batch {batch_size:>2}: dense p50 {rows[str(batch_size)]['dense']['p50_ms']:.3f} ms, "
                f"pruned {rows[str(batch_size)]['candidate']['p50_ms']:.3f} ms, speedup {ratio.ratio:.2f}x "
                f"[{ratio.p10:.2f}-{ratio.p90:.2f}], MACs /{reduction:.2f}, efficiency {ratio.ratio / reduction:.2f}"
            )
        onnx_bytes = {k: s.model_bytes() for k, s in sessions.items()}
    return {
        "model": name,
        "params": {"dense": report.params_before, "pruned": report.params_after},
        "onnx_bytes": onnx_bytes,
        "batches": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    digits = task.train_baseline(seed=0)
    resnet = build_resnet().eval()
    images = torch.randn(32, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    results = [
        compare("digits-cnn", digits, task.example_input(32), args.iterations, args.warmup),
        compare("resnet-wide", resnet, images, max(args.iterations // 4, 20), max(args.warmup // 4, 5)),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "cpu_structured",
        **cpu_environment(),
        "seconds": time.perf_counter() - started,
        "results": results,
    }
    (args.out / "cpu_structured.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out / 'cpu_structured.json'} in {out['seconds']:.0f}s")


if __name__ == "__main__":
    main()
