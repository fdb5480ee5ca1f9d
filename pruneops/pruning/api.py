"""``prune_``: walk a model, score its layers with a criterion, and apply masks or remove structures.

The config's type picks the handler from ``HANDLERS`` (one function per criterion), so a
new method is one config class and one handler. Masks are applied as a parametrization
(``weight = original * mask``), so they hold through every optimizer step of fine-tuning;
:func:`make_permanent` bakes them into the weights. Everything is computed before anything
is changed: on bad input (a layer that cannot take the pattern, missing calibration data, a
filter that matches nothing) the model is left untouched.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from pruneops.errors import PruningError
from pruneops.patterns import STRUCTURED, family, is_structured
from pruneops.pruning import criteria
from pruneops.pruning.config import (
    BNScaleConfig,
    MagnitudeConfig,
    MovementConfig,
    PruneConfig,
    RandomConfig,
    SparseGPTConfig,
    TaylorConfig,
    WandaConfig,
)
from pruneops.pruning.masks import as_rows, global_topk_masks, nm_mask, row_topk_mask, sparsity_of, topk_mask

FilterFn = Callable[[nn.Module, str], bool]
log = logging.getLogger(__name__)
PRUNABLE = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class LayerReport:
    """One weight after pruning: its shape before and after, and its share of zeros."""

    name: str
    kind: str
    shape_before: tuple[int, ...]
    shape_after: tuple[int, ...]
    numel: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / max(self.numel, 1)


@dataclass
class PruneReport:
    """What ``prune_`` did: per-layer and global sparsity, parameters and MACs, the masks."""

    method: str
    pattern: str
    target_sparsity: float
    layers: list[LayerReport]
    params_before: int
    params_after: int
    nonzero_params_before: int
    nonzero_params_after: int
    macs_before: int | None = None
    macs_after: int | None = None
    masks: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    removed: list[str] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        """Zeros over all weights of the pruned layers (for structured: parameters removed)."""
        if self.removed or is_structured(self.pattern):
            return 1 - self.params_after / max(self.params_before, 1)
        return sum(layer.zeros for layer in self.layers) / max(sum(layer.numel for layer in self.layers), 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (masks left out)."""
        data = asdict(self)
        data.pop("masks")
        data["sparsity"] = self.sparsity
        for layer, entry in zip(self.layers, data["layers"], strict=True):
            entry["sparsity"] = layer.sparsity
        return data


Handler = Callable[[nn.Module, Any, dict[str, nn.Module], list[Any]], dict[str, torch.Tensor]]
HANDLERS: dict[type[PruneConfig], Handler] = {}


def register_handler(config_type: type[PruneConfig]) -> Callable[[Handler], Handler]:
    """Decorator: make ``handler`` compute unstructured and N:M masks for ``config_type``.

    >>> @dataclass(frozen=True)
    ... class PositiveConfig(MagnitudeConfig):  # an example criterion: keep positive weights only
    ...     pass
    >>> @register_handler(PositiveConfig)
    ... def positive_masks(model, config, layers, batches):
    ...     return {name: _weight(m) > 0 for name, m in layers.items()}
    >>> model = nn.Sequential(nn.Linear(4, 2))
    >>> _ = prune_(model, PositiveConfig(sparsity=0.5))
    >>> bool((model[0].weight >= 0).all())
    True
    """

    def decorate(handler: Handler) -> Handler:
        HANDLERS[config_type] = handler
        return handler

    return decorate


#: What one granularity does: the masks it applied (unstructured, N:M) and the blocks it removed
#: (structures are removed in place). Arguments: model, config, selected layers, calibration
#: batches, example inputs.
Granularity = Callable[
    [nn.Module, PruneConfig, dict[str, nn.Module], list[Any], torch.Tensor | None],
    tuple[dict[str, torch.Tensor], list[str]],
]
#: Every pattern family (``pruneops.patterns.family``) to how it prunes: prune_ has no other branch.
GRANULARITIES: dict[str, Granularity] = {}


def register_granularity(*families: str) -> Callable[[Granularity], Granularity]:
    """Decorator: make ``granularity`` prune the pattern families named (``"nm"``, ``"channels"``, ...).

    >>> sorted(GRANULARITIES)
    ['blocks', 'channels', 'heads', 'nm', 'unstructured']
    """

    def decorate(granularity: Granularity) -> Granularity:
        for name in families:
            GRANULARITIES[name] = granularity
        return granularity

    return decorate


def glob_filter(include: Sequence[str] = ("*",), exclude: Sequence[str] = ()) -> FilterFn:
    """A ``filter_fn`` from fnmatch patterns on module names (the recipe's include/exclude).

    >>> keep = glob_filter(["encoder.*"], ["*.out"])
    >>> keep(None, "encoder.0.fc"), keep(None, "encoder.0.out"), keep(None, "head")
    (True, False, False)
    """

    def accept(_module: nn.Module, name: str) -> bool:
        matched = any(fnmatch.fnmatchcase(name, p) for p in include)
        return matched and not any(fnmatch.fnmatchcase(name, p) for p in exclude)

    return accept


def select_layers(model: nn.Module, filter_fn: FilterFn | None = None) -> dict[str, nn.Module]:
    """The Linear and Conv2d layers that ``filter_fn(module, name)`` accepts, by name.

    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    >>> list(select_layers(model)), list(select_layers(model, glob_filter(exclude=["3"])))
    (['0', '3'], ['0'])
    """
    layers: dict[str, nn.Module] = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE) and (filter_fn is None or filter_fn(module, name))
    }
    if not layers:
        raise PruningError("the layer filter matches no Linear or Conv2d layer; check include/exclude")
    return layers


def check_fits(model: nn.Module, config: PruneConfig, filter_fn: FilterFn | None = None) -> list[str]:
    """What :func:`prune_` would refuse, without touching the model: selected layer names, or :class:`PruningError`.

    Checks that the filter selects a layer, that N:M fits every selected layer (input width
    divisible by M, no grouped convolution), that ``heads`` finds attention modules and
    ``blocks`` a block list.

    >>> model = torch.nn.Sequential(torch.nn.Linear(30, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> check_fits(model, MagnitudeConfig(pattern="2:4"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneops.errors.PruningError: layer '0' cannot take pattern 2:4: its input dimension 30 is not divisible by 4; ...
    """
    from pruneops.pruning.structured import _attention_modules, find_block_list

    layers = select_layers(model, filter_fn)
    _check_pattern_fits(config, layers)
    if config.pattern == "heads" and not _attention_modules(model):
        raise PruningError("pattern heads needs attention modules with num_heads and query/key/value layers")
    if config.pattern == "blocks":
        find_block_list(model)
    return list(layers)


def prune_(
    model: nn.Module,
    config: PruneConfig,
    filter_fn: FilterFn | None = None,
    calibration: Iterable[Any] | None = None,
    example_inputs: torch.Tensor | None = None,
) -> PruneReport:
    """Prune ``model`` in place as ``config`` says and report what changed.

    ``calibration`` is an iterable of input batches (Wanda, SparseGPT) or of
    ``(inputs, targets)`` batches (Taylor, movement). ``example_inputs`` is needed for
    structured pruning's dependency graph and for MAC counts; it defaults to the first
    calibration batch.

    >>> import torch
    >>> from pruneops.pruning.config import MagnitudeConfig
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> report = prune_(model, MagnitudeConfig(pattern="2:4"))
    >>> round(report.sparsity, 2), [layer.name for layer in report.layers]
    (0.5, ['0', '2'])
    >>> make_permanent(model)
    >>> float((model[0].weight == 0).float().mean())
    0.5
    >>> from pruneops.pruning.config import WandaConfig
    >>> before = model[0].weight.clone()
    >>> prune_(model, WandaConfig(sparsity=0.5))  # no calibration: refused, nothing changed
    Traceback (most recent call last):
    ...
    pruneops.errors.PruningError: WandaConfig needs calibration batches; pass calibration=[...]
    >>> torch.equal(model[0].weight, before)
    True
    >>> round(prune_(model, WandaConfig(sparsity=0.75), calibration=[torch.randn(16, 8)]).sparsity, 2)
    0.75
    """
    batches = list(calibration) if calibration is not None else []
    if config.needs_calibration and not batches:
        raise PruningError(f"{type(config).__name__} needs calibration batches; pass calibration=[...]")
    if example_inputs is None and batches:
        example_inputs = _inputs_of(batches[0])
    layers = select_layers(model, filter_fn)
    params_before, nonzero_before = _count_params(model)
    macs_before = count_macs(model, example_inputs)
    shapes_before = {name: tuple(_weight(m).shape) for name, m in layers.items()}

    masks, removed = GRANULARITIES[family(config.pattern)](model, config, layers, batches, example_inputs)

    surviving = dict(model.named_modules())
    reports = [
        LayerReport(
            name,
            type(module).__name__,
            shapes_before[name],
            tuple(_weight(surviving[name]).shape) if name in surviving else (0,),
            _weight(surviving[name]).numel() if name in surviving else 0,
            int((_weight(surviving[name]) == 0).sum()) if name in surviving else 0,
        )
        for name, module in layers.items()
    ]
    params_after, nonzero_after = _count_params(model)
    return PruneReport(
        method=type(config).__name__.removesuffix("Config").lower(),
        pattern=config.pattern,
        target_sparsity=float(config.sparsity or 0),
        layers=reports,
        params_before=params_before,
        params_after=params_after,
        nonzero_params_before=nonzero_before,
        nonzero_params_after=nonzero_after,
        macs_before=macs_before,
        macs_after=count_macs(model, example_inputs),
        masks=masks,
        removed=removed,
    )


@register_granularity("unstructured", "nm")
def _by_masks(
    model: nn.Module,
    config: PruneConfig,
    layers: dict[str, nn.Module],
    batches: list[Any],
    example_inputs: torch.Tensor | None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Masks from the criterion's handler, held on each layer as a parametrization."""
    handler = HANDLERS.get(type(config))
    if handler is None:
        raise PruningError(f"{type(config).__name__} does not support pattern {config.pattern!r}")
    _check_pattern_fits(config, layers)
    masks = handler(model, config, layers, batches)
    for name, mask in masks.items():
        apply_mask(layers[name], mask)
    return masks, []


@register_granularity(*STRUCTURED)
def _by_structure(
    model: nn.Module,
    config: PruneConfig,
    layers: dict[str, nn.Module],
    batches: list[Any],
    example_inputs: torch.Tensor | None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Channels, heads or blocks removed in place (Torch-Pruning, imported only here)."""
    from pruneops.pruning.structured import prune_structure

    if example_inputs is None:
        raise PruningError("structured pruning needs example_inputs (or calibration batches) to trace the model")
    return {}, prune_structure(model, config, layers, example_inputs, batches)


# ---------------------------------------------------------------------- masks on modules


class Mask(nn.Module):
    """Parametrization ``weight = original * mask``; the mask is a buffer, never trained."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        mask: torch.Tensor = self.mask  # type: ignore[assignment]
        return weight * mask.to(weight.dtype)


def _parametrizations(module: nn.Module) -> Any:
    """``module.parametrizations["weight"]`` (torch types the attribute loosely)."""
    return getattr(module, "parametrizations")["weight"]  # noqa: B009


def original_weight(module: nn.Module) -> torch.Tensor:
    """The trainable tensor behind ``module.weight``: the unmasked original when masked.

    >>> layer = nn.Linear(2, 1)
    >>> original_weight(layer) is layer.weight
    True
    """
    if parametrize.is_parametrized(module, "weight"):
        original: torch.Tensor = _parametrizations(module).original
        return original
    return _weight(module)


def get_mask(module: nn.Module) -> torch.Tensor | None:
    """The mask currently parametrizing ``module.weight``, if any.

    >>> layer = nn.Linear(2, 1)
    >>> get_mask(layer) is None
    True
    >>> apply_mask(layer, torch.tensor([[True, False]]))
    >>> get_mask(layer).tolist()
    [[True, False]]
    """
    if parametrize.is_parametrized(module, "weight"):
        for item in _parametrizations(module):
            if isinstance(item, Mask):
                return item.mask  # type: ignore[return-value]
    return None


def apply_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Mask ``module.weight`` (replacing an earlier mask), zeroing the original too.

    >>> layer = nn.Linear(2, 1)
    >>> apply_mask(layer, torch.tensor([[False, True]]))
    >>> bool(layer.weight[0, 0] == 0), bool(original_weight(layer)[0, 0] == 0)
    (True, True)
    """
    mask = mask.to(torch.bool)
    existing = get_mask(module)
    if existing is not None:
        existing.copy_(mask)
        with torch.no_grad():
            original_weight(module).mul_(mask)
        return
    with torch.no_grad():
        _weight(module).mul_(mask)
    parametrize.register_parametrization(module, "weight", Mask(mask))


def make_permanent(model: nn.Module) -> None:
    """Remove every mask parametrization, leaving plain weights that hold the zeros.

    >>> model = nn.Sequential(nn.Linear(2, 1))
    >>> apply_mask(model[0], torch.tensor([[False, True]]))
    >>> make_permanent(model)
    >>> get_mask(model[0]) is None, bool(model[0].weight[0, 0] == 0)
    (True, True)
    """
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every mask in the model, by module name (copies).

    >>> model = nn.Sequential(nn.Linear(2, 1), nn.Linear(1, 1))
    >>> apply_mask(model[0], torch.tensor([[True, False]]))
    >>> {name: mask.tolist() for name, mask in masks_of(model).items()}
    {'0': [[True, False]]}
    """
    return {name: mask.clone() for name, m in model.named_modules() if (mask := get_mask(m)) is not None}


# ---------------------------------------------------------------------- handlers


def _masks_from_scores(
    config: PruneConfig, layers: dict[str, nn.Module], scores: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Masks for N:M, per-layer or global patterns; weights already masked stay masked."""
    for name, module in layers.items():
        existing = get_mask(module)
        if existing is not None:
            scores[name] = torch.where(existing, scores[name], torch.full_like(scores[name], -float("inf")))
    nm = config.nm
    if nm is not None:
        return {name: nm_mask(score, *nm) for name, score in scores.items()}
    sparsity = float(config.sparsity or 0)
    if config.scope == "global":
        return global_topk_masks(scores, sparsity)
    per_layer = row_topk_mask if config.scope == "row" else topk_mask
    return {name: per_layer(score, sparsity) for name, score in scores.items()}


@register_handler(MagnitudeConfig)
def _magnitude(
    model: nn.Module, config: Any, layers: dict[str, nn.Module], batches: list[Any]
) -> dict[str, torch.Tensor]:
    scores = {name: criteria.magnitude(_weight(m).detach(), config.norm) for name, m in layers.items()}
    return _masks_from_scores(config, layers, scores)


@register_handler(RandomConfig)
def _random(model: nn.Module, config: Any, layers: dict[str, nn.Module], batches: list[Any]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(config.seed)
    scores = {name: torch.rand(_weight(m).shape, generator=generator) for name, m in layers.items()}
    return _masks_from_scores(config, layers, scores)


@register_handler(WandaConfig)
def _wanda(model: nn.Module, config: Any, layers: dict[str, nn.Module], batches: list[Any]) -> dict[str, torch.Tensor]:
    stats = collect_input_stats(model, layers, batches, hessian=False)
    scores = {name: criteria.wanda(_weight(m).detach(), stats[name].sq_sum.sqrt()) for name, m in layers.items()}
    return _masks_from_scores(config, layers, scores)


@register_handler(SparseGPTConfig)
def _sparsegpt(
    model: nn.Module, config: Any, layers: dict[str, nn.Module], batches: list[Any]
) -> dict[str, torch.Tensor]:
    stats = collect_input_stats(model, layers, batches, hessian=True)
    results = {}
    for name, module in layers.items():
        stat = stats[name]
        if stat.xtx is None:
            raise PruningError(f"no Hessian was gathered for {name}")
        hessian = 2.0 * stat.xtx / max(stat.rows, 1)
        results[name] = _sparsegpt_layer(name, _weight(module).detach(), hessian, config)
    # Reconstructed weights are written only once every layer succeeded.
    with torch.no_grad():
        for name, (new_weight, _) in results.items():
            _weight(layers[name]).copy_(new_weight)
    return {name: mask for name, (_, mask) in results.items()}


def _sparsegpt_layer(
    name: str, weight: torch.Tensor, hessian: torch.Tensor, config: SparseGPTConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.float64 if config.precision == "float64" else torch.float32
    args = (weight, hessian, float(config.sparsity or 0), config.nm, config.blocksize, config.percdamp)
    try:
        return criteria.sparsegpt(*args, dtype=dtype)
    except torch.linalg.LinAlgError:
        if dtype == torch.float64:
            raise PruningError(f"{name}: the dampened Hessian is not positive definite; raise percdamp") from None
        log.info("%s: float32 Cholesky failed; redoing this layer in float64", name)
        return criteria.sparsegpt(*args, dtype=torch.float64)


@register_handler(TaylorConfig)
def _taylor(model: nn.Module, config: Any, layers: dict[str, nn.Module], batches: list[Any]) -> dict[str, torch.Tensor]:
    products = accumulate_weight_grad(model, layers, batches, config.loss_fn, squared=True)
    scores = {name: criteria.taylor(_weight(layers[name]), products[name]) for name in layers}
    return _masks_from_scores(config, layers, scores)


@register_handler(MovementConfig)
def _movement(
    model: nn.Module, config: Any, layers: dict[str, nn.Module], batches: list[Any]
) -> dict[str, torch.Tensor]:
    if config.scores is not None:
        missing = sorted(set(layers) - set(config.scores))
        if missing:
            raise PruningError(f"movement scores missing for layers: {', '.join(missing)}")
        accumulated = {name: config.scores[name].clone() for name in layers}
    else:
        accumulated = {name: -p for name, p in accumulate_weight_grad(model, layers, batches, config.loss_fn).items()}
    return _masks_from_scores(config, layers, {n: criteria.movement(s) for n, s in accumulated.items()})


@register_handler(BNScaleConfig)
def _bn_scale(
    model: nn.Module, config: Any, layers: dict[str, nn.Module], batches: list[Any]
) -> dict[str, torch.Tensor]:
    raise PruningError("bn_scale ranks whole channels; use pattern: channels")


# ---------------------------------------------------------------------- statistics


@dataclass
class InputStats:
    """Running statistics of one layer's inputs in the :func:`as_rows` column layout."""

    sq_sum: torch.Tensor
    xtx: torch.Tensor | None
    rows: int = 0


def collect_input_stats(
    model: nn.Module, layers: dict[str, nn.Module], batches: list[Any], hessian: bool
) -> dict[str, InputStats]:
    """Run calibration batches and gather per-column sums of squares (and ``X^T X``).
    >>> model = nn.Sequential(nn.Linear(3, 2))
    >>> stats = collect_input_stats(model, {"0": model[0]}, [torch.ones(4, 3)], hessian=True)
    >>> stats["0"].rows, stats["0"].sq_sum.tolist(), tuple(stats["0"].xtx.shape)
    (4, [4.0, 4.0, 4.0], (3, 3))
    """
    stats: dict[str, InputStats] = {}

    def hook_for(name: str, module: nn.Module) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            columns = _input_columns(module, args[0].detach()).double()
            entry = stats.get(name)
            if entry is None:
                width = columns.shape[1]
                entry = stats[name] = InputStats(
                    torch.zeros(width, dtype=torch.float64),
                    torch.zeros(width, width, dtype=torch.float64) if hessian else None,
                )
            entry.sq_sum += columns.pow(2).sum(dim=0)
            if entry.xtx is not None:
                entry.xtx += columns.T @ columns
            entry.rows += columns.shape[0]

        return hook

    handles = [module.register_forward_pre_hook(hook_for(name, module)) for name, module in layers.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                model(_inputs_of(batch))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    unseen = sorted(set(layers) - set(stats))
    if unseen:
        raise PruningError(f"calibration batches never reached layers: {', '.join(unseen)}")
    return stats


def accumulate_weight_grad(
    model: nn.Module,
    layers: dict[str, nn.Module],
    batches: list[Any],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    squared: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-batch ``w * dL/dw`` summed over batches, or its square (``squared``) summed.

    Taylor uses the squares (Molchanov et al., 2019): on a converged model the batch
    gradients point in different directions and a signed sum cancels to noise. Movement
    uses the signed sum, as its definition asks.

    >>> model = nn.Sequential(nn.Linear(3, 2))
    >>> batches = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))]
    >>> squares = accumulate_weight_grad(model, {"0": model[0]}, batches, F.cross_entropy, squared=True)
    >>> tuple(squares["0"].shape), bool((squares["0"] >= 0).all())
    ((2, 3), True)
    >>> accumulate_weight_grad(model, {"0": model[0]}, [torch.randn(4, 3)], F.cross_entropy)
    Traceback (most recent call last):
    ...
    pruneops.errors.PruningError: taylor and movement need labelled calibration batches: (inputs, targets)
    """
    if not all(isinstance(b, (tuple, list)) and len(b) == 2 for b in batches):
        raise PruningError("taylor and movement need labelled calibration batches: (inputs, targets)")
    totals = {name: torch.zeros_like(_weight(m)) for name, m in layers.items()}
    was_training = model.training
    model.eval()
    try:
        for inputs, targets in batches:
            model.zero_grad(set_to_none=True)
            loss_fn(model(inputs), targets).backward()
            for name, module in layers.items():
                weight = _weight(module)
                grad = _weight_grad(module)
                if grad is not None:
                    product = (weight * grad).detach()
                    totals[name] += product.pow(2) if squared else product
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return totals


# ---------------------------------------------------------------------- helpers


def _check_pattern_fits(config: PruneConfig, layers: dict[str, nn.Module]) -> None:
    nm = config.nm
    if nm is None:
        return
    for name, module in layers.items():
        width = as_rows(_weight(module)).shape[1]
        if width % nm[1]:
            raise PruningError(
                f"layer {name!r} cannot take pattern {config.pattern}: its input dimension {width} "
                f"is not divisible by {nm[1]}; exclude it"
            )
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise PruningError(f"layer {name!r} is a grouped convolution; N:M needs groups=1, exclude it")


def _input_columns(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Inputs as rows of the layer's GEMM: ``(tokens, in)`` or unfolded conv patches."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise PruningError("calibration statistics for grouped convolutions are not supported")
        patches = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # type: ignore[arg-type]
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return x.reshape(-1, x.shape[-1])


def _inputs_of(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _weight(module: nn.Module) -> torch.Tensor:
    return module.weight  # type: ignore[return-value]


def _weight_grad(module: nn.Module) -> torch.Tensor | None:
    return original_weight(module).grad


def _count_params(model: nn.Module) -> tuple[int, int]:
    total = nonzero = 0
    for name, tensor in model.state_dict().items():
        if name.endswith(".mask") or not tensor.is_floating_point():
            continue
        total += tensor.numel()
        nonzero += int((tensor != 0).sum())
    # A parametrized weight appears as ".original": count the masked value instead.
    for module in model.modules():
        mask = get_mask(module)
        if mask is not None:
            nonzero -= int((original_weight(module) != 0).sum())
            nonzero += int((_weight(module) != 0).sum())
    return total, nonzero


def count_macs(model: nn.Module, example_inputs: torch.Tensor | None) -> int | None:
    """Multiply-accumulates of the model's Linear and Conv2d layers (its GEMMs) for one forward.

    Counted from the shapes each layer sees on ``example_inputs``, so a physically smaller
    model counts fewer; masked zeros still count (dense kernels multiply them).

    >>> count_macs(nn.Linear(4, 3), torch.ones(2, 4))
    24
    """
    if example_inputs is None:
        return None
    total = 0

    def hook(module: nn.Module, _args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        weight = _weight(module)
        if isinstance(module, nn.Conv2d):
            total += output.numel() * weight[0].numel()
        else:
            total += output.numel() * weight.shape[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, PRUNABLE)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


__all__ = [
    "HANDLERS",
    "LayerReport",
    "Mask",
    "PruneReport",
    "apply_mask",
    "count_macs",
    "get_mask",
    "glob_filter",
    "make_permanent",
    "masks_of",
    "original_weight",
    "prune_",
    "register_handler",
    "select_layers",
    "sparsity_of",
]
