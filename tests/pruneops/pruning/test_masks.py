"""Mask math on small tensors: exact counts, the N:M property, global thresholds."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pruneops.pruning.masks import global_topk_masks, nm_mask, prune_count, satisfies_nm, topk_mask

pytestmark = pytest.mark.unit


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 40),
    sparsity=st.floats(0.01, 0.99),
    seed=st.integers(0, 1000),
)
def test_topk_removes_exact_count(rows: int, cols: int, sparsity: float, seed: int) -> None:
    scores = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed))
    mask = topk_mask(scores, sparsity)
    assert int((~mask).sum()) == prune_count(rows * cols, sparsity)
    if (~mask).any() and mask.any():
        assert scores[~mask].max() <= scores[mask].min()  # the lowest scores went


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 10),
    groups=st.integers(1, 10),
    nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (2, 8), (4, 8)]),
    seed=st.integers(0, 1000),
)
def test_nm_keeps_exactly_n_of_m(rows: int, groups: int, nm: tuple[int, int], seed: int) -> None:
    n, m = nm
    weight = torch.randn(rows, groups * m, generator=torch.Generator().manual_seed(seed))
    mask = nm_mask(weight.abs(), n, m)
    kept = mask.reshape(rows, groups, m).sum(dim=2)
    assert bool((kept == n).all())
    assert satisfies_nm(weight * mask, n, m)
    # Within each group, the kept weights are the largest.
    grouped = (weight.abs() * mask).reshape(rows, groups, m)
    dropped = (weight.abs() * ~mask).reshape(rows, groups, m)
    assert bool((grouped.max(dim=2).values >= dropped.max(dim=2).values).all())


def test_nm_on_conv_weight_uses_flattened_inputs() -> None:
    weight = torch.randn(8, 4, 3, 3)  # 36 inputs per filter
    mask = nm_mask(weight.abs(), 2, 4)
    assert mask.shape == weight.shape and satisfies_nm(weight * mask, 2, 4)


def test_nm_rejects_indivisible_width() -> None:
    with pytest.raises(ValueError, match="not divisible by 4"):
        nm_mask(torch.rand(2, 6), 2, 4)
    assert not satisfies_nm(torch.zeros(2, 6), 2, 4)


def test_satisfies_nm_detects_a_dense_group() -> None:
    weight = torch.zeros(2, 8)
    weight[1, 4:7] = 1.0
    assert not satisfies_nm(weight, 2, 4)
    weight[1, 6] = 0.0
    assert satisfies_nm(weight, 2, 4)


def test_global_threshold_spans_layers() -> None:
    scores = {"small": torch.full((10,), 0.1), "large": torch.full((30,), 5.0)}
    masks = global_topk_masks(scores, 0.25)
    assert int((~masks["small"]).sum()) == 10 and bool(masks["large"].all())
