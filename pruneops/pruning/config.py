"""Pruning configs: one small frozen dataclass per criterion; its type picks the handler.

In the manner of torchao's ``sparsify_``: ``prune_(model, WandaConfig(pattern="2:4"))``.
Configs are plain dataclasses (not pydantic) because this package must import nothing
beyond torch and numpy; :func:`from_spec` converts a validated recipe section.

>>> WandaConfig(pattern="2:4").nm
(2, 4)
>>> MagnitudeConfig(sparsity=0.0)
Traceback (most recent call last):
...
pruneops.errors.PruningError: sparsity must be in (0, 1) exclusive, got 0.0; e.g. 0.5 removes half

The rules live in :mod:`pruneops.patterns`, which the recipe checks with too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from pruneops.errors import PruningError
from pruneops.patterns import UNSTRUCTURED, check, is_structured, parse_pattern


@dataclass(frozen=True)
class PruneConfig:
    """What every config shares: how much, in which pattern, compared over which scope.

    ``scope`` says which scores compete for the unstructured budget: ``"layer"`` (each
    layer's own ranking), ``"global"`` (one threshold over all selected layers) or ``"row"``
    (each output row of each layer keeps the same share). ``None`` takes the criterion's
    default: ``"row"`` for Wanda (as in the paper), ``"layer"`` for the rest.
    """

    sparsity: float | None = None
    pattern: str = "unstructured"
    scope: str | None = None

    #: The scope an unstructured config gets when none is given.
    default_scope: ClassVar[str] = "layer"
    #: The recipe's name of the criterion (``prune.method``); the pattern rules are checked for it.
    method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if self.scope is None:
            object.__setattr__(self, "scope", self.default_scope if self.pattern == UNSTRUCTURED else "layer")
        checked = check(self.method or None, self.pattern, self.sparsity, self.scope)
        object.__setattr__(self, "sparsity", checked.sparsity)

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(N, M)`` for an N:M pattern, else ``None``."""
        return parse_pattern(self.pattern)

    @property
    def structured(self) -> bool:
        """True for channels, heads and blocks (the model physically shrinks)."""
        return is_structured(self.pattern)

    @property
    def needs_calibration(self) -> bool:
        """Whether ``prune_`` needs calibration batches for this config."""
        return False


@dataclass(frozen=True)
class MagnitudeConfig(PruneConfig):
    """|w| (norm 1) or w² (norm 2); for structures, the group's L-norm (Torch-Pruning)."""

    method: ClassVar[str] = "magnitude"

    norm: int = 1


@dataclass(frozen=True)
class RandomConfig(PruneConfig):
    """Random scores: the baseline every criterion should beat."""

    method: ClassVar[str] = "random"

    seed: int = 0


@dataclass(frozen=True)
class WandaConfig(PruneConfig):
    """|W| times the L2 norm of each input feature over calibration batches.

    Unstructured Wanda compares weights within each output row by default (``scope="row"``,
    the paper's choice); ``scope="layer"`` ranks the whole layer at once.
    """

    method: ClassVar[str] = "wanda"

    default_scope: ClassVar[str] = "row"

    @property
    def needs_calibration(self) -> bool:
        return True


@dataclass(frozen=True)
class SparseGPTConfig(PruneConfig):
    """Second-order pruning with weight reconstruction from the calibration Hessian.

    Computes in float32 as the paper does; ``precision="float64"`` for every layer, and a
    layer whose dampened Hessian float32 cannot factor is redone in float64 on its own.
    """

    method: ClassVar[str] = "sparsegpt"

    blocksize: int = 128
    percdamp: float = 0.01
    precision: str = "float32"

    def __post_init__(self) -> None:
        super().__post_init__()  # a scope other than layer is refused here, before any Hessian is gathered
        if self.precision not in ("float32", "float64"):
            raise PruningError(f"precision must be 'float32' or 'float64', got {self.precision!r}")

    @property
    def needs_calibration(self) -> bool:
        return True


def _cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(outputs, targets)


@dataclass(frozen=True)
class TaylorConfig(PruneConfig):
    """First-order saliency |w * dL/dw| over labelled calibration batches ``(inputs, targets)``."""

    method: ClassVar[str] = "taylor"

    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(default=_cross_entropy, compare=False)

    @property
    def needs_calibration(self) -> bool:
        return True


@dataclass(frozen=True)
class MovementConfig(PruneConfig):
    """Movement scores ``-sum w * g``: taken from ``scores`` (accumulated while fine-tuning by a
    :class:`pruneops.pruning.MovementTracker`), else accumulated over labelled calibration batches."""

    method: ClassVar[str] = "movement"

    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(default=_cross_entropy, compare=False)
    scores: dict[str, torch.Tensor] | None = field(default=None, compare=False, repr=False)

    @property
    def needs_calibration(self) -> bool:
        return self.scores is None


@dataclass(frozen=True)
class BNScaleConfig(PruneConfig):
    """Channels ranked by their BatchNorm scale |gamma| (network slimming); channels only."""

    method: ClassVar[str] = "bn_scale"


_CONFIGS = (MagnitudeConfig, RandomConfig, WandaConfig, SparseGPTConfig, TaylorConfig, MovementConfig, BNScaleConfig)
_BY_METHOD: dict[str, type[PruneConfig]] = {config.method: config for config in _CONFIGS}


def from_spec(spec: Any, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> PruneConfig:
    """The config for a recipe's ``prune`` section (a :class:`pruneops.recipe.PruneSpec`).

    >>> from pruneops.recipe import PruneSpec
    >>> from_spec(PruneSpec(method="wanda", pattern="2:4"))
    WandaConfig(sparsity=0.5, pattern='2:4', scope='layer')
    >>> from_spec(PruneSpec(method="wanda", sparsity=0.5))
    WandaConfig(sparsity=0.5, pattern='unstructured', scope='row')
    """
    cls = _BY_METHOD[spec.method]
    kwargs: dict[str, Any] = {"sparsity": spec.sparsity, "pattern": spec.pattern, "scope": spec.scope}
    if cls is MagnitudeConfig:
        kwargs["norm"] = spec.norm
    if cls in (TaylorConfig, MovementConfig) and loss_fn is not None:
        kwargs["loss_fn"] = loss_fn
    return cls(**kwargs)
