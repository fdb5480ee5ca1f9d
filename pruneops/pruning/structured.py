"""Structured pruning: channels and neurons, attention heads, whole transformer blocks.

Channels and heads go through Torch-Pruning's dependency graph, which removes coupled
weights together (a conv's filters, its BatchNorm, the next layer's inputs, a flatten into a
Linear), so the model physically shrinks and still runs. Blocks are dropped whole, as
DistilBERT did: the least important blocks of the model's block list become
:class:`SkipBlock`, which passes its input through.

Which layers shrink: only the selected layers' outputs are pruned. Every other Linear or
Conv2d is handed to Torch-Pruning as ignored (typically the classifier, whose output is the
number of classes).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pruneops.errors import PruningError
from pruneops.pruning.config import (
    BNScaleConfig,
    MagnitudeConfig,
    PruneConfig,
    RandomConfig,
    TaylorConfig,
)
from pruneops.pruning.masks import prune_count


class SkipBlock(nn.Module):
    """A dropped transformer block: returns its first input unchanged.

    >>> SkipBlock()(torch.ones(2), None).tolist()
    [1.0, 1.0]
    """

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return x


def prune_structure(
    model: nn.Module,
    config: PruneConfig,
    layers: dict[str, nn.Module],
    example_inputs: torch.Tensor,
    batches: list[Any],
) -> list[str]:
    """Remove channels, heads or blocks in place; return the names of removed blocks.

    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> config = MagnitudeConfig(pattern="channels", sparsity=0.5)
    >>> prune_structure(model, config, {"0": model[0]}, torch.randn(2, 8), [])  # no block removed
    []
    >>> model[0].out_features, model[2].in_features, tuple(model(torch.randn(2, 8)).shape)
    (8, 8, (2, 4))
    """
    return _STRUCTURES[config.pattern](model, config, layers, example_inputs, batches)


def _prune_groups(
    model: nn.Module,
    config: PruneConfig,
    layers: dict[str, nn.Module],
    example_inputs: torch.Tensor,
    batches: list[Any],
) -> list[str]:
    """Channels (neurons) or attention heads through Torch-Pruning's dependency graph."""
    import torch_pruning as tp

    rank = _GROUP_IMPORTANCE.get(type(config))
    if rank is None:
        raise PruningError(f"{type(config).__name__} does not support pattern {config.pattern!r}")
    importance = rank(config)
    if isinstance(config, TaylorConfig):
        _backward_on(model, batches, config)
    prunable: list[nn.Module] = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    protected = _interface_layers(model, prunable, example_inputs)
    selected = {id(m) for m in layers.values() if id(m) not in protected}
    ignored = [m for m in prunable if id(m) not in selected]
    kwargs: dict[str, Any] = {
        "importance": importance,
        "pruning_ratio": float(config.sparsity or 0),
        "global_pruning": config.scope == "global",
        "ignored_layers": ignored,
    }
    attention = _attention_modules(model)
    if config.pattern == "heads":
        if not attention:
            raise PruningError("pattern heads needs attention modules with num_heads and query/key/value layers")
        projections = {id(p) for att in attention for p in (att.query, att.key, att.value)}
        kwargs.update(
            # Only the query/key/value groups are roots; Torch-Pruning skips groups whose
            # ratio is 0, so the ratio is set and every other layer is ignored instead.
            ignored_layers=[m for m in prunable if id(m) not in projections or id(m) not in selected],
            num_heads={proj: att.num_heads for att in attention for proj in (att.query, att.key, att.value)},
            prune_num_heads=True,
            prune_head_dims=False,
            head_pruning_ratio=float(config.sparsity or 0),
        )
    elif attention:
        # On a transformer, "channels" means MLP neurons: projections into the residual
        # stream (width = hidden size) and query/key/value (widths divide into heads) stay.
        hidden = attention[0].query.in_features
        kwargs["ignored_layers"] = [
            m
            for m in prunable
            if m in ignored
            or getattr(m, "out_features", None) == hidden
            or any(m is p for att in attention for p in (att.query, att.key, att.value))
        ]
    pruner = tp.pruner.MetaPruner(model, example_inputs, **kwargs)
    pruner.step()
    model.zero_grad(set_to_none=True)
    for att in attention:
        att.num_heads = att.query.out_features // att.head_dim
    return []


def _interface_layers(model: nn.Module, prunable: list[nn.Module], example_inputs: torch.Tensor) -> set[int]:
    """Layers whose output is the model's output: pruning them would change what it returns."""
    produced: dict[int, int] = {}
    handles = [m.register_forward_hook(lambda mod, _a, out: produced.__setitem__(id(out), id(mod))) for m in prunable]
    was_training = model.training
    try:
        with torch.no_grad():
            output = model.eval()(example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    outputs = output if isinstance(output, (tuple, list)) else [output]
    return {produced[id(o)] for o in outputs if id(o) in produced}


def _tp() -> Any:
    import torch_pruning

    return torch_pruning


#: Torch-Pruning's importance for each criterion that ranks channel or head groups (which
#: criterion may take which pattern is pruneops.patterns' rule; bn_scale takes channels only).
_GROUP_IMPORTANCE: dict[type[PruneConfig], Any] = {
    MagnitudeConfig: lambda config: _tp().importance.GroupMagnitudeImportance(p=config.norm),
    TaylorConfig: lambda config: _tp().importance.GroupTaylorImportance(),
    BNScaleConfig: lambda config: _tp().importance.BNScaleImportance(),
    RandomConfig: lambda config: _tp().importance.RandomImportance(),
}


def _backward_on(model: nn.Module, batches: list[Any], config: TaylorConfig) -> None:
    """Accumulate gradients on labelled batches; Torch-Pruning's Taylor importance reads them."""
    if not batches or not all(isinstance(b, (tuple, list)) and len(b) == 2 for b in batches):
        raise PruningError("taylor needs labelled calibration batches: (inputs, targets)")
    model.zero_grad(set_to_none=True)
    for inputs, targets in batches:
        config.loss_fn(model(inputs), targets).backward()


def _attention_modules(model: nn.Module) -> list[Any]:
    return [
        m
        for m in model.modules()
        if hasattr(m, "num_heads")
        and all(isinstance(getattr(m, p, None), nn.Linear) for p in ("query", "key", "value"))
    ]


def find_block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's block list: the largest ModuleList whose children share one type.

    >>> from pruneops.models.encoder import Encoder
    >>> name, blocks = find_block_list(Encoder(vocab_size=50, hidden=16, layers=3, heads=2, intermediate=32))
    >>> name, len(blocks)
    ('encoder.layer', 3)
    >>> find_block_list(nn.Sequential(nn.Linear(4, 4)))
    Traceback (most recent call last):
    ...
    pruneops.errors.PruningError: pattern blocks needs a ModuleList of identical blocks (e.g. encoder.layer)
    """
    candidates = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and len(m) >= 2 and len({type(c) for c in m}) == 1
    ]
    if not candidates:
        raise PruningError("pattern blocks needs a ModuleList of identical blocks (e.g. encoder.layer)")
    return max(candidates, key=lambda item: len(item[1]))


def _drop_blocks(
    model: nn.Module,
    config: PruneConfig,
    layers: dict[str, nn.Module],
    example_inputs: torch.Tensor,
    batches: list[Any],
) -> list[str]:
    path, blocks = find_block_list(model)
    names = [f"{path}.{i}" for i in range(len(blocks))]
    # A block may be dropped only if the filter selected at least one of its layers.
    eligible = [i for i, n in enumerate(names) if any(layer.startswith(n + ".") for layer in layers)]
    if not eligible:
        raise PruningError(f"the layer filter selects no block of {path}")
    drop = prune_count(len(blocks), float(config.sparsity or 0))
    if drop >= len(blocks) or drop > len(eligible):
        raise PruningError(f"sparsity {config.sparsity} would drop {drop} of {len(blocks)} blocks; lower it")
    if drop == 0:
        return []
    scores = _block_scores(model, blocks, eligible, config, example_inputs, batches)
    ranked = sorted(eligible, key=lambda i: scores[i])[:drop]
    for index in ranked:
        blocks[index] = SkipBlock()
    return [names[i] for i in sorted(ranked)]


def _block_scores(
    model: nn.Module,
    blocks: nn.ModuleList,
    eligible: list[int],
    config: PruneConfig,
    example_inputs: torch.Tensor,
    batches: list[Any],
) -> dict[int, float]:
    """Importance of each block.

    magnitude: the block's relative contribution to the residual stream,
    ``||block(x) - x|| / ||x||`` on the calibration (or example) inputs. taylor: ``|sum w*g|``
    over the block's parameters. random: seeded random scores.
    """
    score = _BLOCK_SCORES.get(type(config))
    if score is None:
        raise PruningError(f"{type(config).__name__} cannot rank blocks; use magnitude, taylor or random")
    return score(model, blocks, eligible, config, example_inputs, batches)


def _random_block_scores(
    _model: nn.Module, _blocks: nn.ModuleList, eligible: list[int], config: Any, _example: torch.Tensor, _b: list[Any]
) -> dict[int, float]:
    generator = torch.Generator().manual_seed(config.seed)
    return {i: float(torch.rand(1, generator=generator)) for i in eligible}


def _taylor_block_scores(
    model: nn.Module,
    blocks: nn.ModuleList,
    eligible: list[int],
    config: Any,
    _example: torch.Tensor,
    batches: list[Any],
) -> dict[int, float]:
    _backward_on(model, batches, config)
    scores = {
        i: abs(sum(float((p * p.grad).sum()) for p in blocks[i].parameters() if p.grad is not None)) for i in eligible
    }
    model.zero_grad(set_to_none=True)
    return scores


def _magnitude_block_scores(
    model: nn.Module,
    blocks: nn.ModuleList,
    eligible: list[int],
    _config: Any,
    example_inputs: torch.Tensor,
    batches: list[Any],
) -> dict[int, float]:
    change = dict.fromkeys(eligible, 0.0)

    def hook_for(index: int) -> Any:
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            change[index] += float((output - args[0]).norm() / args[0].norm().clamp(min=1e-12))

        return hook

    handles = [blocks[i].register_forward_hook(hook_for(i)) for i in eligible]
    inputs = [b[0] if isinstance(b, (tuple, list)) else b for b in batches] or [example_inputs]
    try:
        with torch.no_grad():
            for x in inputs:
                model(x)
    finally:
        for handle in handles:
            handle.remove()
    return change


_BLOCK_SCORES: dict[type[PruneConfig], Any] = {
    RandomConfig: _random_block_scores,
    TaylorConfig: _taylor_block_scores,
    MagnitudeConfig: _magnitude_block_scores,
}
#: Each structured pattern's way of removing structures.
_STRUCTURES: dict[str, Any] = {"channels": _prune_groups, "heads": _prune_groups, "blocks": _drop_blocks}
