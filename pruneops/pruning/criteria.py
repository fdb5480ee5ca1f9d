"""Importance criteria: plain tensor functions on one layer's weight and statistics.

Higher scores mean more important. Each function is tested directly on small tensors;
``pruneops.pruning.api`` walks the model and feeds them.

>>> import torch
>>> w = torch.tensor([[1.0, -2.0], [0.5, 0.1]])
>>> magnitude(w).tolist()
[[1.0, 2.0], [0.5, 0.10000000149011612]]
>>> wanda(w, torch.tensor([10.0, 1.0])).tolist()
[[10.0, 2.0], [5.0, 0.10000000149011612]]
"""

from __future__ import annotations

import torch

from pruneops.pruning.masks import as_rows, nm_mask, prune_count


def magnitude(weight: torch.Tensor, norm: int = 1) -> torch.Tensor:
    """|w| (L1) or w² (L2); the ranking is the same, the global threshold is not."""
    return weight.abs() if norm == 1 else weight.pow(2)


def wanda(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """Wanda (Sun et al., 2023): ``|W_ij| * ||X_j||_2``, input norms over all calibration tokens.

    ``input_norm`` has one entry per column of :func:`as_rows` (``in * kh * kw`` for a conv).
    """
    rows = as_rows(weight).abs() * input_norm.reshape(1, -1).to(weight.dtype)
    return rows.reshape(weight.shape)


def taylor(weight: torch.Tensor, grad_product: torch.Tensor) -> torch.Tensor:
    """First-order Taylor saliency ``|w * dL/dw|`` (Molchanov et al., 2019).

    ``grad_product`` is the per-batch ``(w * dL/dw)²`` summed over calibration batches.
    """
    return grad_product.abs().reshape(weight.shape)


def movement(accumulated: torch.Tensor) -> torch.Tensor:
    """Movement pruning (Sanh et al., 2020): ``-sum_t w_t * g_t``; weights moving to zero score low."""
    return accumulated


def sparsegpt(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT (Frantar & Alistarh, 2023): OBS pruning with reconstruction of the kept weights.

    ``hessian`` is ``2/n * X^T X`` of the layer's inputs (columns as in :func:`as_rows`).
    Columns are processed in blocks; in each block the weights with the lowest
    ``w² / [H^-1]_jj²`` are removed and the error is pushed onto the not-yet-processed
    columns through the inverse Hessian's Cholesky factor. Returns ``(new_weight, mask)``;
    exactly ``round(sparsity * numel)`` weights are removed (or exactly N of every M kept).
    """
    shape, dtype = weight.shape, weight.dtype
    w = as_rows(weight).detach().clone().double()
    rows, cols = w.shape
    if nm is not None and (blocksize % nm[1] or cols % nm[1]):
        raise ValueError(f"input dimension {cols} and block size {blocksize} must be multiples of {nm[1]}")
    h = hessian.detach().clone().double()
    # Inputs that were always zero on the calibration data give a singular Hessian; a unit
    # diagonal keeps it invertible. Their weights are ranked like any other, not zeroed:
    # they may be alive on other data, and zeroing them would overshoot the sparsity.
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    damp = percdamp * torch.mean(torch.diag(h))
    h += damp * torch.eye(cols, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    mask = torch.ones_like(w, dtype=torch.bool)
    total_remove = prune_count(w.numel(), sparsity)
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        w1 = w[:, start:end].clone()
        hinv1 = hinv[start:end, start:end]
        err1 = torch.zeros_like(w1)
        if nm is None:
            saliency = w1.pow(2) / torch.diag(hinv1).reshape(1, -1).pow(2)
            # Spread the exact total over blocks so every block removes its share.
            remove = prune_count(rows * end, sparsity) - prune_count(rows * start, sparsity)
            remove = min(remove, total_remove)
            block_keep = torch.ones_like(w1, dtype=torch.bool)
            if remove:
                flat = block_keep.reshape(-1)
                flat[torch.topk(saliency.reshape(-1), remove, largest=False).indices] = False
        else:
            block_keep = torch.ones_like(w1, dtype=torch.bool)
        for i in range(end - start):
            if nm is not None and i % nm[1] == 0:
                # N:M groups are chosen as the loop reaches them, from weights already
                # updated by the errors of earlier columns (as in the paper).
                group = w1[:, i : i + nm[1]].pow(2) / torch.diag(hinv1)[i : i + nm[1]].reshape(1, -1).pow(2)
                block_keep[:, i : i + nm[1]] = nm_mask(group, nm[0], nm[1])
            column = w1[:, i]
            d = hinv1[i, i]
            q = column.clone()
            q[~block_keep[:, i]] = 0
            err = (column - q) / d
            w1[:, i:] -= err.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            w1[:, i] = q
            err1[:, i] = err
        w[:, start:end] = w1
        mask[:, start:end] = block_keep
        w[:, end:] -= err1 @ hinv[start:end, end:]
    w[~mask] = 0
    return w.to(dtype).reshape(shape), mask.reshape(shape)
