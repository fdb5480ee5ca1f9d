"""2:4 sparse tensor cores vs dense fp16 on a GPU: end to end and the MLP GEMMs alone.

Runs on a bare GPU machine with only torch (and this repository on ``PYTHONPATH``):

- a BERT-base-shaped encoder (random weights: speed does not depend on values), and
  all-MiniLM-L6-v2 when its package is installed; every encoder Linear pruned to 2:4
  (magnitude) and converted with ``to_sparse_semi_structured``; fp16; batch 1/16/64 x
  sequence 128/384; eager and ``torch.compile``;
- the MLP GEMMs alone (768->3072 and 3072->768) at the same token counts.

Dense and sparse take turns in one process (``pruneops.bench.measure_interleaved``, CUDA
synchronised); each row reports medians, the speedup and its p10-p90 spread. The JSON
records the GPU, its compute capability, the backend (cuSPARSELt or CUTLASS) and the torch
version. A configuration that fails (compile, memory) is recorded with its error, not
dropped. ``--smoke`` runs tiny shapes on CPU (dense only) to check the script itself.

Run: ``PYTHONPATH=. python benchmarks/gpu_2to4.py --out benchmarks/results``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from pruneops.bench import measure_interleaved, speedup, summarize
from pruneops.models.encoder import bert_base_config
from pruneops.models.encoder import build as build_encoder
from pruneops.pruning import MagnitudeConfig, glob_filter, make_permanent, prune_
from pruneops.runtimes.torch_sparse import backend, sparse_plan

RESULTS = Path(__file__).parent / "results"


def to_sparse(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy whose convertible 2:4 Linear weights are semi-structured sparse tensors."""
    from torch.sparse import to_sparse_semi_structured

    sparse = copy.deepcopy(model)
    converted = []
    for entry in sparse_plan(sparse):
        if entry.convert:
            layer = cast(nn.Linear, sparse.get_submodule(entry.name))
            layer.weight = nn.Parameter(to_sparse_semi_structured(layer.weight.detach()), requires_grad=False)
            converted.append(entry.name)
    return sparse, converted


def pruned_2to4(model: nn.Module, layers: str) -> nn.Module:
    pruned = copy.deepcopy(model)
    prune_(pruned, MagnitudeConfig(pattern="2:4"), glob_filter([layers]))
    make_permanent(pruned)
    return pruned


def time_pair(
    dense: Callable[[], Any], sparse: Callable[[], Any] | None, batch: int, iterations: int, warmup: int, sync: Any
) -> dict[str, Any]:
    contenders = {"dense": dense} if sparse is None else {"dense": dense, "sparse": sparse}
    samples = measure_interleaved(contenders, warmup, iterations, sync)
    row: dict[str, Any] = {"dense": summarize(samples["dense"], batch).to_dict()}
    if sparse is not None:
        row["sparse"] = summarize(samples["sparse"], batch).to_dict()
        row["speedup"] = speedup(samples["dense"], samples["sparse"]).to_dict()
    return row


def encoder_rows(
    name: str, dense: nn.Module, layers: str, shapes: list[tuple[int, int]], args: argparse.Namespace, vocab: int
) -> list[dict[str, Any]]:
    device = "cuda" if not args.smoke else "cpu"
    dtype = torch.float16 if not args.smoke else torch.float32
    dense = dense.eval().to(device=device, dtype=dtype)
    candidate = pruned_2to4(dense.float().cpu(), layers).to(device=device, dtype=dtype)
    sparse, converted = (candidate, []) if args.smoke else to_sparse(candidate)
    sync = torch.cuda.synchronize if device == "cuda" else None
    rows = []
    for compiled in (False, True) if not args.smoke else (False,):
        for batch, seq in shapes:
            row: dict[str, Any] = {"model": name, "batch": batch, "seq": seq, "compiled": compiled}
            try:
                ids = torch.randint(0, vocab, (batch, seq), device=device)
                run_dense = torch.compile(dense) if compiled else dense
                run_sparse = (torch.compile(sparse) if compiled else sparse) if not args.smoke else None
                with torch.inference_mode():
                    row.update(
                        time_pair(
                            functools.partial(run_dense, ids),
                            None if run_sparse is None else functools.partial(run_sparse, ids),
                            batch,
                            args.iterations,
                            args.warmup,
                            sync,
                        )
                    )
            except Exception as err:  # noqa: BLE001 - record the failure, keep measuring the rest
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                row["traceback"] = traceback.format_exc(limit=3)
            row["sparse_layers"] = len(converted)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("dense", "sparse", "traceback")}))
    return rows


def gemm_rows(tokens_list: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    device = "cuda" if not args.smoke else "cpu"
    dtype = torch.float16 if not args.smoke else torch.float32
    hidden, intermediate = (768, 3072) if not args.smoke else (64, 128)
    sync = torch.cuda.synchronize if device == "cuda" else None
    rows = []
    for in_features, out_features in ((hidden, intermediate), (intermediate, hidden)):
        layer = nn.Linear(in_features, out_features)
        pruned = pruned_2to4(layer, "*").to(device=device, dtype=dtype)
        sparse, converted = (pruned, []) if args.smoke else to_sparse(nn.Sequential(pruned))
        for tokens in tokens_list:
            x = torch.randn(tokens, in_features, device=device, dtype=dtype)
            with torch.inference_mode():
                row = {
                    "gemm": f"{in_features}->{out_features}",
                    "tokens": tokens,
                    "sparse": bool(converted),
                    **time_pair(
                        functools.partial(pruned, x),
                        None if args.smoke else functools.partial(sparse, x),
                        tokens,
                        args.iterations,
                        args.warmup,
                        sync,
                    ),
                }
            rows.append(row)
            print(json.dumps({"gemm": row["gemm"], "tokens": tokens, "speedup": row.get("speedup")}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU, dense only (checks the script)")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("gpu_2to4.py needs a CUDA GPU (use --smoke to check the script on CPU)")
    started = time.perf_counter()
    torch.manual_seed(0)
    info: dict[str, Any] = {"benchmark": "gpu_2to4", "torch": torch.__version__, "platform": platform.platform()}
    if args.smoke:
        info["device"] = "cpu (smoke run: dense only, not a measurement of sparse kernels)"
        config = {"hidden": 64, "layers": 2, "heads": 4, "intermediate": 128}
        shapes, tokens = [(1, 16), (4, 32)], [64]
    else:
        major, minor = torch.cuda.get_device_capability()
        info.update(device=torch.cuda.get_device_name(), compute_capability=f"{major}.{minor}", backend=backend())
        config = bert_base_config()
        shapes = [(b, s) for b in (1, 16, 64) for s in (128, 384)]
        tokens = [b * s for b, s in shapes]
    vocab = 30522
    rows = encoder_rows("bert-base-shaped", build_encoder(**config, vocab_size=vocab), "encoder.*", shapes, args, vocab)
    try:
        from pruneops.models import minilm

        if minilm.available() and not args.smoke:
            rows += encoder_rows("all-MiniLM-L6-v2", minilm.load(), "encoder.encoder.*", shapes, args, vocab)
        else:
            info["minilm"] = "not measured: package not installed" if not args.smoke else "skipped in smoke run"
    except ImportError as err:
        info["minilm"] = f"not measured: {err}"
    result = {**info, "seconds": 0.0, "encoder": rows, "gemm": gemm_rows(tokens, args)}
    result["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    name = "gpu_2to4_smoke.json" if args.smoke else "gpu_2to4.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
