"""Masks from scores: plain tensor functions, no modules, no model walking.

A mask is a bool tensor shaped like the weight; True keeps a weight. Scores are higher for
weights worth keeping. Counts are exact: ``topk_mask`` removes exactly
``round(sparsity * numel)`` weights, and ``nm_mask`` keeps exactly N of every M.

>>> import torch
>>> topk_mask(torch.tensor([[3.0, 1.0], [2.0, 4.0]]), 0.5)
tensor([[ True, False],
        [False,  True]])
>>> nm_mask(torch.tensor([[1.0, 4.0, 2.0, 3.0]]), 2, 4)
tensor([[False,  True, False,  True]])
"""

from __future__ import annotations

import torch


def prune_count(numel: int, sparsity: float) -> int:
    """How many of ``numel`` weights a sparsity removes (rounded to the nearest weight).

    >>> prune_count(10, 0.25)
    2
    """
    return round(sparsity * numel)


def topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep all but the ``round(sparsity * numel)`` lowest-scoring entries (ties broken by position).

    >>> topk_mask(torch.tensor([[0.1, 0.9], [0.5, 0.2]]), 0.5)
    tensor([[False,  True],
            [ True, False]])
    """
    flat = scores.reshape(-1)
    remove = prune_count(flat.numel(), sparsity)
    mask = torch.ones_like(flat, dtype=torch.bool)
    if remove:
        mask[torch.topk(flat, remove, largest=False, sorted=False).indices] = False
    return mask.reshape(scores.shape)


def row_topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Remove the ``round(sparsity * inputs)`` lowest scores of every output row (Wanda's
    per-output comparison group): each row ends exactly as sparse as the others.

    >>> row_topk_mask(torch.tensor([[3.0, 1.0], [9.0, 8.0]]), 0.5).tolist()
    [[True, False], [True, False]]
    """
    rows = as_rows(scores)
    remove = prune_count(rows.shape[1], sparsity)
    mask = torch.ones_like(rows, dtype=torch.bool)
    if remove:
        mask.scatter_(1, torch.topk(rows, remove, dim=1, largest=False, sorted=False).indices, False)
    return mask.reshape(scores.shape)


def global_topk_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """One threshold over every layer: remove the lowest ``sparsity`` share of all scores together.

    >>> masks = global_topk_masks({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([9.0, 8.0])}, 0.5)
    >>> masks["a"].tolist(), masks["b"].tolist()
    ([False, False], [True, True])
    """
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).float() for n in names])
    keep = topk_mask(flat, sparsity)
    masks, offset = {}, 0
    for name in names:
        size = scores[name].numel()
        masks[name] = keep[offset : offset + size].reshape(scores[name].shape)
        offset += size
    return masks


def as_rows(weight: torch.Tensor) -> torch.Tensor:
    """The weight as a 2-D ``(outputs, inputs)`` matrix: a conv's input is ``in * kh * kw``.

    N:M groups and SparseGPT columns follow this layout (the GEMM's reduction dimension).

    >>> as_rows(torch.zeros(8, 3, 2, 2)).shape
    torch.Size([8, 12])
    """
    return weight.reshape(weight.shape[0], -1)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest scores in every group of ``m`` consecutive inputs of each row.

    Raises ``ValueError`` when the input dimension is not a multiple of ``m``.

    >>> nm_mask(torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5, 0.6, 0.7, 0.8]]), 2, 4).int()
    tensor([[1, 0, 1, 0, 0, 0, 1, 1]], dtype=torch.int32)
    """
    rows = as_rows(scores)
    if rows.shape[1] % m:
        raise ValueError(f"input dimension {rows.shape[1]} is not divisible by {m}")
    groups = rows.reshape(rows.shape[0], -1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, torch.topk(groups, n, dim=2).indices, True)
    return keep.reshape(scores.shape)


def satisfies_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive inputs holds at most ``n`` non-zeros.

    This is the structural property that ``torch.sparse.to_sparse_semi_structured`` requires.

    >>> satisfies_nm(torch.tensor([[0.0, 1.0, 0.0, 2.0]]), 2, 4)
    True
    >>> satisfies_nm(torch.tensor([[1.0, 1.0, 0.0, 2.0]]), 2, 4)
    False
    """
    rows = as_rows(weight)
    if rows.shape[1] % m:
        return False
    nonzero = (rows.reshape(rows.shape[0], -1, m) != 0).sum(dim=2)
    return bool((nonzero <= n).all())


def sparsity_of(tensor: torch.Tensor) -> float:
    """Fraction of exact zeros.

    >>> sparsity_of(torch.tensor([0.0, 1.0, 0.0, 2.0]))
    0.5
    """
    return float((tensor == 0).sum()) / max(tensor.numel(), 1)
