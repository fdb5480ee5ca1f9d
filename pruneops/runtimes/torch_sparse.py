"""2:4 weights on NVIDIA sparse tensor cores via ``torch.sparse.to_sparse_semi_structured``.

Every ``nn.Linear`` whose weight satisfies 2:4 and whose shape the kernels accept is
converted (fp16); the others stay dense, and the plan says why. The evidence records which
layers went sparse, the backend (cuSPARSELt or CUTLASS), the GPU and its compute
capability, and the torch version. GPUs below compute capability 8.0 have no sparse tensor
cores: the runtime refuses them rather than measure dense kernels under a sparse name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from pruneops.errors import RuntimeUnavailable
from pruneops.pruning.masks import satisfies_nm
from pruneops.runtimes import Runtime, Session
from pruneops.runtimes.torch_runtime import TorchSession

MIN_CAPABILITY = (8, 0)
# CUTLASS's limits for fp16/bf16 weights (the sparse operand): rows % 32, cols % 64. They are
# the stricter of the two backends, so a plan made without a GPU holds on either one.
_FALLBACK_LIMITS = (32, 64)


@dataclass(frozen=True)
class LayerPlan:
    """Whether one Linear goes sparse, and if not, why."""

    name: str
    shape: tuple[int, int]
    convert: bool
    reason: str


def backend() -> str:
    """The semi-structured backend torch will use: cuSPARSELt when available, else CUTLASS.

    >>> backend() in ("cuSPARSELt", "CUTLASS")
    True
    """
    from torch.sparse import SparseSemiStructuredTensor

    if not SparseSemiStructuredTensor._FORCE_CUTLASS and torch.backends.cusparselt.is_available():
        return "cuSPARSELt"
    return "CUTLASS"


def _limits(dtype: torch.dtype) -> tuple[int, int]:
    try:
        from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

        cls = SparseSemiStructuredTensorCUSPARSELT if backend() == "cuSPARSELt" else SparseSemiStructuredTensorCUTLASS
        config = cls._DTYPE_SHAPE_CONSTRAINTS[dtype]
        cutlass = SparseSemiStructuredTensorCUTLASS._DTYPE_SHAPE_CONSTRAINTS[dtype]
        return max(config.sparse_min_rows, cutlass.sparse_min_rows), max(
            config.sparse_min_cols, cutlass.sparse_min_cols
        )
    except (ImportError, AttributeError, KeyError):
        return _FALLBACK_LIMITS


def sparse_plan(model: nn.Module, dtype: torch.dtype = torch.float16) -> list[LayerPlan]:
    """For every Linear: can its weight become a semi-structured sparse tensor? (CPU-checkable).

    >>> layer = torch.nn.Linear(128, 64)
    >>> from pruneops.pruning import MagnitudeConfig, prune_, make_permanent
    >>> _ = prune_(layer, MagnitudeConfig(pattern="2:4")); make_permanent(layer)
    >>> plan = sparse_plan(torch.nn.Sequential(layer, torch.nn.Linear(64, 10)))
    >>> [(p.name, p.convert) for p in plan]
    [('0', True), ('1', False)]
    >>> plan[1].reason
    'weight does not satisfy 2:4'
    >>> small = torch.nn.Linear(8, 8)
    >>> _ = prune_(small, MagnitudeConfig(pattern="2:4")); make_permanent(small)
    >>> sparse_plan(small)[0].reason
    'shape 8x8 is not a multiple of 32x64'
    """
    rows_multiple, cols_multiple = _limits(dtype)
    plan = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        out_features, in_features = module.weight.shape
        shape = (int(out_features), int(in_features))
        if not satisfies_nm(module.weight, 2, 4):
            plan.append(LayerPlan(name, shape, False, "weight does not satisfy 2:4"))
        elif out_features % rows_multiple or in_features % cols_multiple:
            plan.append(
                LayerPlan(
                    name,
                    shape,
                    False,
                    f"shape {out_features}x{in_features} is not a multiple of {rows_multiple}x{cols_multiple}",
                )
            )
        else:
            plan.append(LayerPlan(name, shape, True, "2:4 and shape fit"))
    return plan


class TorchSparseRuntime(Runtime):
    """fp16 eager torch on CUDA with 2:4 Linear weights as semi-structured sparse tensors."""

    name = "torch-sparse"

    def check(self) -> None:
        if self.target != "cuda" or not torch.cuda.is_available():
            raise RuntimeUnavailable("torch-sparse needs a CUDA GPU (sparse tensor cores)")
        capability = torch.cuda.get_device_capability()
        if capability < MIN_CAPABILITY:
            raise RuntimeUnavailable(
                f"torch-sparse needs compute capability >= 8.0 (Ampere); "
                f"{torch.cuda.get_device_name()} is {capability[0]}.{capability[1]}"
            )

    def load(self, model: nn.Module, example: torch.Tensor, workdir: Path, name: str = "model") -> Session:
        from torch.sparse import to_sparse_semi_structured

        prepared = copy.deepcopy(model).eval().to(device="cuda", dtype=torch.float16)
        plan = sparse_plan(prepared)
        for entry in plan:
            if entry.convert:
                layer = cast(nn.Linear, prepared.get_submodule(entry.name))
                layer.weight = nn.Parameter(to_sparse_semi_structured(layer.weight.detach()), requires_grad=False)
        major, minor = torch.cuda.get_device_capability()
        evidence: dict[str, Any] = {
            "runtime": self.name,
            "dtype": "torch.float16",
            "device": torch.cuda.get_device_name(),
            "compute_capability": f"{major}.{minor}",
            "torch": torch.__version__,
            "backend": backend(),
            "sparse_layers": [e.name for e in plan if e.convert],
            "dense_layers": {e.name: e.reason for e in plan if not e.convert},
            "sparse_kernels": any(e.convert for e in plan),
        }
        session = _SparseSession(prepared, torch.device("cuda"), torch.float16, evidence)
        session.run(example)
        return session


class _SparseSession(TorchSession):
    def model_bytes(self) -> int:
        total = 0
        for tensor in list(self.model.parameters()) + list(self.model.buffers()):
            packed = getattr(tensor, "packed", None)
            if packed is not None:  # semi-structured: compressed values (+ metadata inside or beside)
                meta = getattr(tensor, "meta", None)
                total += packed.numel() * packed.element_size()
                total += 0 if meta is None else meta.numel() * meta.element_size()
            else:
                total += tensor.numel() * tensor.element_size()
        return total
