"""Criteria on one layer with correlated, unevenly scaled inputs: the reason the methods exist."""

from __future__ import annotations

import pytest
import torch

from pruneops.pruning.criteria import magnitude, sparsegpt, wanda
from pruneops.pruning.masks import nm_mask, satisfies_nm, topk_mask

pytestmark = pytest.mark.unit


def correlated_layer(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (32 x 64) and inputs (2048 x 64) whose features are correlated and scaled 0.1-10x."""
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(2048, 16, generator=gen)
    mixing = torch.randn(16, 64, generator=gen)
    scales = torch.logspace(-1, 1, 64)[torch.randperm(64, generator=gen)]
    inputs = (latent @ mixing + 0.3 * torch.randn(2048, 64, generator=gen)) * scales
    weight = torch.randn(32, 64, generator=gen) / 8
    return weight.double(), inputs.double()


def output_error(weight: torch.Tensor, pruned: torch.Tensor, inputs: torch.Tensor) -> float:
    return float((inputs @ weight.T - inputs @ pruned.T).norm() / (inputs @ weight.T).norm())


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparsegpt_beats_wanda_beats_magnitude(pattern: str, seed: int) -> None:
    weight, inputs = correlated_layer(seed)
    nm = (2, 4) if pattern == "2:4" else None

    def mask_for(scores: torch.Tensor) -> torch.Tensor:
        return nm_mask(scores, 2, 4) if nm else topk_mask(scores, 0.5)

    magnitude_error = output_error(weight, weight * mask_for(magnitude(weight)), inputs)
    wanda_error = output_error(weight, weight * mask_for(wanda(weight, inputs.pow(2).sum(0).sqrt())), inputs)
    hessian = 2 * inputs.T @ inputs / len(inputs)
    reconstructed, mask = sparsegpt(weight, hessian, 0.5, nm, blocksize=32)
    sparsegpt_error = output_error(weight, reconstructed, inputs)

    assert sparsegpt_error < wanda_error < magnitude_error
    assert int((~mask).sum()) == weight.numel() // 2
    assert bool((reconstructed[~mask] == 0).all())
    if nm:
        assert satisfies_nm(reconstructed, 2, 4)


def test_sparsegpt_exact_count_with_uneven_blocks() -> None:
    weight, inputs = correlated_layer()
    hessian = 2 * inputs.T @ inputs / len(inputs)
    _, mask = sparsegpt(weight, hessian, 0.3, blocksize=24)  # 64 columns: blocks of 24, 24, 16
    assert int((~mask).sum()) == round(0.3 * weight.numel())


def test_sparsegpt_handles_dead_inputs() -> None:
    weight, inputs = correlated_layer()
    inputs[:, 5] = 0.0
    hessian = 2 * inputs.T @ inputs / len(inputs)
    pruned, mask = sparsegpt(weight, hessian, 0.5)
    assert torch.isfinite(pruned).all()
    assert int((~mask).sum()) == weight.numel() // 2


def test_sparsegpt_nm_needs_divisible_width() -> None:
    weight = torch.randn(4, 6)
    with pytest.raises(ValueError, match="multiples of 4"):
        sparsegpt(weight, torch.eye(6), 0.5, (2, 4))
