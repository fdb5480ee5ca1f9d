"""The pruning engine: every granularity and criterion behind one verb, ``prune_``.

Imports only torch and numpy at module level (Torch-Pruning is imported by the structured
handler when it runs), so it also works on a bare GPU machine.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(16, 8))
>>> report = prune_(model, MagnitudeConfig(sparsity=0.25))
>>> report.layers[0].zeros
32
"""

from pruneops.pruning.api import (
    LayerReport,
    Mask,
    PruneReport,
    apply_mask,
    check_fits,
    get_mask,
    glob_filter,
    make_permanent,
    masks_of,
    prune_,
    register_handler,
    select_layers,
)
from pruneops.pruning.config import (
    BNScaleConfig,
    MagnitudeConfig,
    MovementConfig,
    PruneConfig,
    RandomConfig,
    SparseGPTConfig,
    TaylorConfig,
    WandaConfig,
    from_spec,
)
from pruneops.pruning.masks import satisfies_nm, sparsity_of
from pruneops.pruning.structured import SkipBlock

__all__ = [
    "BNScaleConfig",
    "LayerReport",
    "MagnitudeConfig",
    "Mask",
    "MovementConfig",
    "PruneConfig",
    "PruneReport",
    "RandomConfig",
    "SkipBlock",
    "SparseGPTConfig",
    "TaylorConfig",
    "WandaConfig",
    "apply_mask",
    "check_fits",
    "from_spec",
    "get_mask",
    "glob_filter",
    "make_permanent",
    "masks_of",
    "prune_",
    "register_handler",
    "satisfies_nm",
    "select_layers",
    "sparsity_of",
]
