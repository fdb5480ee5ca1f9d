"""Wanda and SparseGPT written straight from their papers, in float32, as the yardstick.

Independent of ``pruneops.pruning``: nothing here imports it, so a shared mistake cannot
hide. The tests compare masks and reconstruction error against these, and
``benchmarks/sparsegpt_speed.py`` times pruneops against :func:`sparsegpt`.

- Wanda (Sun et al., 2023, eq. 1 and section 3): score ``|W_ij| * ||X_j||_2``; weights are
  compared *per output*: each row of ``W`` loses the same number of weights.
- SparseGPT (Frantar & Alistarh, 2023, algorithm 1): ``H = 2 X^T X`` dampened by 1% of its
  mean diagonal, the upper Cholesky factor of ``H^-1``, columns in blocks of ``B``; the mask of
  each block keeps the weights with the largest ``w^2 / [H^-1]_cc^2``, and each pruned
  weight's error is spread over the later columns of the block, then (lazily) of the layer.

>>> import torch
>>> w = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
>>> wanda_mask(w, torch.ones(4), 0.5).tolist()
[[False, True, False, True]]
"""

from __future__ import annotations

import torch


def wanda_mask(weight: torch.Tensor, input_norm: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True keeps: per output row, the ``sparsity`` share of lowest ``|W| * ||X||`` is removed."""
    score = weight.abs() * input_norm.reshape(1, -1)
    remove = round(weight.shape[1] * sparsity)
    order = torch.sort(score, dim=1, stable=True).indices
    mask = torch.ones_like(weight, dtype=torch.bool)
    mask.scatter_(1, order[:, :remove], False)
    return mask


def sparsegpt(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pruned weight, mask)`` from algorithm 1, float32; the mask is chosen per block
    of ``blocksize`` columns (``B_s = B``), or per group of ``M`` columns for N:M."""
    w = weight.detach().float().clone()
    rows, cols = w.shape
    h = hessian.detach().float().clone()
    h += percdamp * torch.mean(torch.diag(h)) * torch.eye(cols)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    mask = torch.ones(rows, cols, dtype=torch.bool)
    for i in range(0, cols, blocksize):
        end = min(i + blocksize, cols)
        block_hinv = hinv[i:end, i:end]
        diag = torch.diag(block_hinv)
        errors = torch.zeros(rows, end - i)
        if nm is None:
            saliency = w[:, i:end] ** 2 / diag.reshape(1, -1) ** 2
            remove = round(saliency.numel() * sparsity)
            flat = mask[:, i:end].reshape(-1).clone()
            flat[torch.sort(saliency.reshape(-1), stable=True).indices[:remove]] = False
            mask[:, i:end] = flat.reshape(rows, end - i)
        for j in range(i, end):
            if nm is not None and (j - i) % nm[1] == 0:
                group = w[:, j : j + nm[1]] ** 2 / diag[j - i : j - i + nm[1]].reshape(1, -1) ** 2
                drop = torch.topk(group, nm[1] - nm[0], dim=1, largest=False).indices
                mask[:, j : j + nm[1]] = torch.ones_like(group, dtype=torch.bool).scatter_(1, drop, False)
            error = w[:, j] / hinv[j, j] * ~mask[:, j]
            w[:, j:end] -= error.unsqueeze(1) @ hinv[j, j:end].unsqueeze(0)
            errors[:, j - i] = error
        w[:, end:] -= errors @ hinv[i:end, end:]
    return w * mask, mask
