"""Runtimes: availability checks, the sparse conversion plan, and GPU execution (marked gpu)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pruneops.errors import RuntimeUnavailable
from pruneops.models.encoder import build as build_encoder
from pruneops.pruning import MagnitudeConfig, glob_filter, make_permanent, prune_
from pruneops.runtimes import get_runtime
from pruneops.runtimes.torch_sparse import sparse_plan
from pruneops.tasks.digits import task

ENCODER = {"vocab_size": 100, "hidden": 128, "layers": 2, "heads": 4, "intermediate": 256, "max_positions": 64}
no_cuda = not torch.cuda.is_available()


def pruned_encoder() -> nn.Module:
    torch.manual_seed(0)
    model = build_encoder(**ENCODER).eval()
    prune_(model, MagnitudeConfig(pattern="2:4"), glob_filter(["encoder.*"]))
    make_permanent(model)
    return model


@pytest.mark.unit
def test_two_to_four_encoder_passes_the_sparse_conversion_check() -> None:
    plan = {p.name: p for p in sparse_plan(pruned_encoder())}
    encoder_layers = [name for name in plan if name.startswith("encoder.")]
    assert len(encoder_layers) == 12  # 2 blocks x (q, k, v, attention out, MLP up, MLP down)
    assert all(plan[name].convert for name in encoder_layers), [plan[n] for n in encoder_layers]


@pytest.mark.unit
def test_plan_says_why_a_layer_stays_dense(digits_baseline: nn.Module) -> None:
    model = copy.deepcopy(digits_baseline)
    prune_(model, MagnitudeConfig(pattern="2:4"), glob_filter(exclude=["features.0"]))
    make_permanent(model)
    plan = {p.name: p for p in sparse_plan(model)}
    assert plan["classifier.1"].convert  # 128 x 512: fits
    assert not plan["classifier.3"].convert
    assert plan["classifier.3"].reason == "shape 10x128 is not a multiple of 32x64"
    dense = {p.name: p for p in sparse_plan(digits_baseline)}
    assert dense["classifier.1"].reason == "weight does not satisfy 2:4"


@pytest.mark.unit
def test_unknown_and_unavailable_runtimes() -> None:
    with pytest.raises(RuntimeUnavailable, match="unknown runtime 'tensorrt'"):
        get_runtime("tensorrt", "cpu")
    with pytest.raises(RuntimeUnavailable, match="unknown target 'tpu'"):
        get_runtime("torch", "tpu")
    if no_cuda:
        with pytest.raises(RuntimeUnavailable, match="no CUDA device on this machine"):
            get_runtime("torch-sparse", "cuda")
        with pytest.raises(RuntimeUnavailable, match="no CUDA device"):
            get_runtime("onnxruntime", "cuda")
    with pytest.raises(RuntimeUnavailable, match="needs a CUDA GPU"):
        get_runtime("torch-sparse", "cpu")


@pytest.mark.unit
def test_cpu_runtimes_match_torch(digits_baseline: nn.Module, tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = task.example_input(16)
    with torch.no_grad():
        expected = digits_baseline(x)
    for name in ("torch", "onnxruntime"):
        session = get_runtime(name, "cpu").load(digits_baseline, task.example_input(2), tmp_path, name="m")
        out = torch.as_tensor(session.run(x))
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
        assert session.evidence["runtime"] == name and session.model_bytes()


@pytest.mark.slow
def test_torch_compile_on_cpu(digits_baseline: nn.Module, tmp_path) -> None:  # type: ignore[no-untyped-def]
    session = get_runtime("torch-compile", "cpu").load(digits_baseline, task.example_input(2), tmp_path)
    assert session.evidence == {"runtime": "torch-compile", "dtype": "torch.float32", "device": "cpu", "compiled": True}
    x = task.example_input(8)
    with torch.no_grad():
        torch.testing.assert_close(session.run(x), digits_baseline(x), atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(no_cuda, reason="needs CUDA")
def test_torch_sparse_runs_sparse_kernels(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = pruned_encoder()
    ids = torch.randint(0, 100, (16, 64))
    dense = get_runtime("torch", "cuda").load(model, ids, tmp_path)
    sparse = get_runtime("torch-sparse", "cuda").load(model, ids, tmp_path)
    assert sparse.evidence["sparse_kernels"] and len(sparse.evidence["sparse_layers"]) == 12
    assert sparse.evidence["backend"] in ("cuSPARSELt", "CUTLASS")
    torch.testing.assert_close(sparse.run(ids).float(), dense.run(ids).float(), atol=2e-2, rtol=2e-2)
    assert sparse.model_bytes() < dense.model_bytes()
