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

from pruneops.pruning.masks import as_rows, prune_count


def magnitude(weight: torch.Tensor, norm: int = 1) -> torch.Tensor:
    """|w| (L1) or w² (L2); the ranking is the same, the global threshold is not.

    >>> magnitude(torch.tensor([-3.0, 2.0])), magnitude(torch.tensor([-3.0, 2.0]), norm=2)
    (tensor([3., 2.]), tensor([9., 4.]))
    """
    return weight.abs() if norm == 1 else weight.pow(2)


def wanda(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """Wanda (Sun et al., 2023): ``|W_ij| * ||X_j||_2``, input norms over all calibration tokens.

    ``input_norm`` has one entry per column of :func:`as_rows` (``in * kh * kw`` for a conv).

    >>> wanda(torch.tensor([[1.0, -2.0]]), torch.tensor([3.0, 0.5]))  # a large input rescues a small weight
    tensor([[3., 1.]])
    """
    rows = as_rows(weight).abs() * input_norm.reshape(1, -1).to(weight.dtype)
    return rows.reshape(weight.shape)


def taylor(weight: torch.Tensor, grad_product: torch.Tensor) -> torch.Tensor:
    """First-order Taylor saliency ``|w * dL/dw|`` (Molchanov et al., 2019).

    ``grad_product`` is the per-batch ``(w * dL/dw)²`` summed over calibration batches.

    >>> taylor(torch.zeros(2, 2), torch.tensor([-1.0, 2.0, 0.0, 4.0]))
    tensor([[1., 2.],
            [0., 4.]])
    """
    return grad_product.abs().reshape(weight.shape)


def movement(accumulated: torch.Tensor) -> torch.Tensor:
    """Movement pruning (Sanh et al., 2020): ``-sum_t w_t * g_t``; weights moving to zero score low.

    >>> movement(torch.tensor([0.5, -0.2]))  # the second weight was moving towards zero
    tensor([ 0.5000, -0.2000])
    """
    return accumulated


def sparsegpt(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT (Frantar & Alistarh, 2023): OBS pruning with reconstruction of the kept weights.

    ``hessian`` is ``2/n * X^T X`` of the layer's inputs (columns as in :func:`as_rows`),
    dampened by ``percdamp`` of its mean diagonal (the paper's 1%). Columns are processed in
    blocks; in each block the weights with the lowest ``w² / [H^-1]_jj²`` are removed and the
    error is pushed onto the not-yet-processed columns through the inverse Hessian's
    Cholesky factor. Computes in ``dtype`` (float32, as the paper; float64 for a layer whose
    Hessian float32 cannot factor). Returns ``(new_weight, mask)``; exactly
    ``round(sparsity * numel)`` weights are removed (or exactly N of every M kept).
    Raises ``torch.linalg.LinAlgError`` when the dampened Hessian is not positive definite.

    >>> w = torch.tensor([[1.0, -0.1, 0.5, 2.0]])
    >>> new, mask = sparsegpt(w, torch.eye(4), 0.5)
    >>> mask.tolist()
    [[True, False, False, True]]
    """
    shape = weight.shape
    w = as_rows(weight).detach().to(dtype, copy=True)
    rows, cols = w.shape
    if nm is not None and (blocksize % nm[1] or cols % nm[1]):
        raise ValueError(f"input dimension {cols} and block size {blocksize} must be multiples of {nm[1]}")
    h = hessian.detach().to(dtype, copy=True)
    # Inputs that were always zero on the calibration data give a singular Hessian; a unit
    # diagonal keeps it invertible. Their weights are ranked like any other, not zeroed:
    # they may be alive on other data, and zeroing them would overshoot the sparsity.
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h.diagonal().add_(percdamp * torch.mean(torch.diag(h)))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    mask = torch.ones_like(w, dtype=torch.bool)
    total_remove = prune_count(w.numel(), sparsity)
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        w1 = w[:, start:end]  # a view: updates land in w
        hinv1 = hinv[start:end, start:end]
        diag1 = torch.diag(hinv1)
        keep1 = mask[:, start:end]
        err1 = torch.empty_like(w1)
        if nm is None:
            # Spread the exact total over blocks so every block removes its share.
            remove = prune_count(rows * end, sparsity) - prune_count(rows * start, sparsity)
            remove = min(remove, total_remove)
            if remove:
                saliency = w1.pow(2) / diag1.reshape(1, -1).pow(2)
                drop = torch.topk(saliency.reshape(-1), remove, largest=False).indices
                keep1[drop // (end - start), drop % (end - start)] = False
        for i in range(end - start):
            if nm is not None and i % nm[1] == 0:
                # N:M groups are chosen as the loop reaches them, from weights already
                # updated by the errors of earlier columns (as in the paper).
                group = w1[:, i : i + nm[1]].pow(2) / diag1[i : i + nm[1]].reshape(1, -1).pow(2)
                drop = torch.topk(group, nm[1] - nm[0], dim=1, largest=False).indices
                keep1[:, i : i + nm[1]].scatter_(1, drop, False)
            # The pruned weights' error, spread over the block's later columns; the pruned
            # column itself ends at exactly zero.
            err = w1[:, i] * ~keep1[:, i] / diag1[i]
            w1[:, i:].sub_(err.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0))
            err1[:, i] = err
        w[:, end:].sub_(err1 @ hinv[start:end, end:])
    w[~mask] = 0
    return w.to(weight.dtype).reshape(shape), mask.reshape(shape)
