"""SparseGPT's time on one layer: pruneops (float32 and float64) against the paper's algorithm.

The reference is ``tests/pruneops/pruning/paper_reference.py`` (float32, written from
algorithm 1 of Frantar & Alistarh, 2023). The layer has MiniLM's MLP-output shape
(384 outputs x 1536 inputs) with correlated, unevenly scaled inputs. Rounds visit the three
implementations in rotating order, so all see the same machine conditions; the JSON holds
every time, the medians, the ratios to the reference, mask agreement and output error.

Run: ``.venv/bin/python benchmarks/sparsegpt_speed.py`` (about a minute on 2 cores).
Writes ``benchmarks/results/sparsegpt_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pruneops.pruning.criteria import sparsegpt
from tests.pruneops.pruning import paper_reference

RESULTS = Path(__file__).parent / "results"
Prune = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def layer(rows: int, cols: int, samples: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(weight, inputs, hessian)`` with correlated inputs scaled 0.1-10x."""
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(samples, 64, generator=gen)
    scales = torch.logspace(-1, 1, cols)[torch.randperm(cols, generator=gen)]
    inputs = (latent @ torch.randn(64, cols, generator=gen) + 0.3 * torch.randn(samples, cols, generator=gen)) * scales
    weight = torch.randn(rows, cols, generator=gen) / 32
    hessian = 2 * inputs.T.double() @ inputs.double() / samples
    return weight, inputs, hessian


def error(weight: torch.Tensor, pruned: torch.Tensor, inputs: torch.Tensor) -> float:
    return float((inputs @ weight.T - inputs @ pruned.T).norm() / (inputs @ weight.T).norm())


def compare(pattern: str, rounds: int, rows: int, cols: int) -> dict[str, Any]:
    weight, inputs, hessian = layer(rows, cols)
    nm = (2, 4) if pattern == "2:4" else None
    contenders: dict[str, Prune] = {
        "reference_float32": lambda: paper_reference.sparsegpt(weight, hessian.float(), 0.5, nm),
        "pruneops_float32": lambda: sparsegpt(weight, hessian, 0.5, nm),
        "pruneops_float64": lambda: sparsegpt(weight, hessian, 0.5, nm, dtype=torch.float64),
    }
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for round_ in range(rounds + 1):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            started = time.perf_counter()
            outputs[name] = contenders[name]()
            if round_:  # round 0 warms up allocators and kernels
                times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    reference, reference_mask = outputs["reference_float32"]
    return {
        "pattern": pattern,
        "shape": [rows, cols],
        "seconds": times,
        "median_seconds": medians,
        "ratio_to_reference": {name: medians[name] / medians["reference_float32"] for name in names},
        "mask_agreement_with_reference": {
            name: float((mask == reference_mask).float().mean()) for name, (_, mask) in outputs.items()
        },
        "output_error": {name: error(weight, pruned, inputs) for name, (pruned, _) in outputs.items()},
        "error_ratio_to_reference": {
            name: error(weight, pruned, inputs) / error(weight, reference, inputs)
            for name, (pruned, _) in outputs.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    comparisons = []
    for pattern in ("unstructured", "2:4"):
        result = compare(pattern, args.rounds, 384, 1536)
        comparisons.append(result)
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in result["ratio_to_reference"].items())
        print(
            f"{pattern:>12}: {ratios}; mask agreement {result['mask_agreement_with_reference']['pruneops_float32']:.4f}"
        )
    out = {
        "benchmark": "sparsegpt_speed",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "torch": torch.__version__,
        "rounds": args.rounds,
        "seconds": time.perf_counter() - started,
        "comparisons": comparisons,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sparsegpt_speed.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out / 'sparsegpt_speed.json'}")


if __name__ == "__main__":
    main()
