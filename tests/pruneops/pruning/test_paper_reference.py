"""pruneops's Wanda and SparseGPT against references written from the papers (paper_reference.py).

The layer is a Linear with correlated, unevenly scaled inputs (where the criteria differ);
pruneops runs through ``prune_`` with its own calibration statistics, the reference from the
raw inputs, so the statistics path is checked too.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneops.errors import PruningError
from pruneops.pruning import SparseGPTConfig, WandaConfig, make_permanent, prune_
from pruneops.pruning.criteria import sparsegpt
from tests.pruneops.pruning import paper_reference

pytestmark = pytest.mark.unit


def layer_and_inputs(seed: int, rows: int = 96, cols: int = 256) -> tuple[nn.Linear, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(1024, 24, generator=gen)
    scales = torch.logspace(-1, 1, cols)[torch.randperm(cols, generator=gen)]
    inputs = (latent @ torch.randn(24, cols, generator=gen) + 0.3 * torch.randn(1024, cols, generator=gen)) * scales
    layer = nn.Linear(cols, rows, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(rows, cols, generator=gen) / 16)
    return layer, inputs


def relative_error(dense: torch.Tensor, pruned: torch.Tensor, inputs: torch.Tensor) -> float:
    return float((inputs @ dense.T - inputs @ pruned.T).norm() / (inputs @ dense.T).norm())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_wanda_default_is_the_papers_per_row_wanda(seed: int, sparsity: float) -> None:
    layer, inputs = layer_and_inputs(seed)
    dense = layer.weight.detach().clone()
    expected = paper_reference.wanda_mask(dense, inputs.pow(2).sum(0).sqrt(), sparsity)
    report = prune_(layer, WandaConfig(sparsity=sparsity), calibration=list(inputs.split(256)))
    assert torch.equal(report.masks[""], expected)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparsegpt_matches_the_paper_in_float32(seed: int, pattern: str) -> None:
    layer, inputs = layer_and_inputs(seed)
    dense = layer.weight.detach().clone()
    nm = (2, 4) if pattern == "2:4" else None
    reference, reference_mask = paper_reference.sparsegpt(dense, 2 * inputs.T @ inputs / len(inputs), 0.5, nm)
    config = SparseGPTConfig(sparsity=0.5) if nm is None else SparseGPTConfig(pattern=pattern)
    report = prune_(layer, config, calibration=list(inputs.split(256)))
    make_permanent(layer)
    agreement = float((report.masks[""] == reference_mask).float().mean())
    ratio = relative_error(dense, layer.weight.detach(), inputs) / relative_error(dense, reference, inputs)
    # The Hessian here is summed in float64 over calibration batches, the reference's in one
    # float32 product: a handful of near-tied weights may swap; the error may not move.
    assert agreement > 0.995, agreement
    assert abs(ratio - 1) < 0.01, ratio


def test_sparsegpt_float64_option_agrees_with_float32() -> None:
    layer, inputs = layer_and_inputs(3)
    weight = layer.weight.detach()
    hessian = 2 * inputs.T.double() @ inputs.double() / len(inputs)
    single, single_mask = sparsegpt(weight, hessian, 0.5)
    double, double_mask = sparsegpt(weight, hessian, 0.5, dtype=torch.float64)
    assert single.dtype == double.dtype == torch.float32
    assert float((single_mask == double_mask).float().mean()) > 0.995
    assert abs(relative_error(weight, single, inputs) / relative_error(weight, double, inputs) - 1) < 0.01


def test_a_layer_float32_cannot_factor_is_redone_in_float64(caplog: pytest.LogCaptureFixture) -> None:
    # Two inputs equal to 1e-5 and no dampening: float32 Cholesky breaks, float64 does not;
    # the layer is pruned either way, at the requested sparsity.
    layer, inputs = layer_and_inputs(4, rows=16, cols=64)
    inputs = inputs.double()
    inputs[:, 1] = inputs[:, 0] + 1e-5 * torch.randn(len(inputs), generator=torch.Generator().manual_seed(5))
    layer.double()
    caplog.set_level("INFO", logger="pruneops.pruning.api")
    report = prune_(layer, SparseGPTConfig(sparsity=0.5, percdamp=0.0), calibration=[inputs])
    assert "redoing this layer in float64" in caplog.text
    assert abs(report.sparsity - 0.5) < 1e-6
    # 8 samples of 64 inputs: rank 8, singular in any precision.
    few = torch.randn(8, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    untouched = nn.Linear(64, 4).double()
    before = untouched.weight.detach().clone()
    with pytest.raises(PruningError, match="not positive definite"):
        prune_(untouched, SparseGPTConfig(sparsity=0.5, percdamp=0.0, precision="float64"), calibration=[few])
    assert torch.equal(untouched.weight, before)
