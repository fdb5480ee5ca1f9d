"""Structured pruning: models physically shrink by the expected amount and still run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from pruneops.errors import PruningError
from pruneops.modelio import ArchSpec, load_model, save_model
from pruneops.models.encoder import build as build_encoder
from pruneops.pruning import BNScaleConfig, MagnitudeConfig, RandomConfig, SkipBlock, TaylorConfig, prune_
from pruneops.tasks.digits import task

pytestmark = pytest.mark.unit
ENCODER = {"vocab_size": 100, "hidden": 64, "layers": 4, "heads": 8, "intermediate": 128, "max_positions": 32}


@pytest.fixture
def encoder() -> nn.Module:
    torch.manual_seed(0)
    return build_encoder(**ENCODER).eval()


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("config_type", "hidden", "params_ratio"),
    [
        (MagnitudeConfig, 64, (0.22, 0.30)),
        (TaylorConfig, 64, (0.22, 0.30)),
        (RandomConfig, 64, (0.22, 0.30)),
        # BN scale ranks only layers followed by BatchNorm: the classifier's hidden Linear stays.
        (BNScaleConfig, 128, (0.33, 0.38)),
    ],
)
def test_digits_channels_shrink_by_a_quarter(
    config_type: type, hidden: int, params_ratio: tuple[float, float], digits_baseline: nn.Module
) -> None:
    model = copy.deepcopy(digits_baseline)
    calibration = list(task.train_batches(64, seed=1))[:2]
    report = prune_(model, config_type(pattern="channels", sparsity=0.5), calibration=calibration)
    widths = {layer.name: layer.shape_after[0] for layer in report.layers}
    # Half the filters of every conv (and of the hidden Linear); the output layer keeps 10 classes.
    assert widths == {"features.0": 16, "features.3": 32, "features.7": 64, "classifier.1": hidden, "classifier.3": 10}
    # Conv-to-conv weights lose both halves: parameters and MACs drop to about a quarter.
    low, high = params_ratio
    assert low < report.params_after / report.params_before < high
    assert report.macs_before and report.macs_after
    assert 0.22 < report.macs_after / report.macs_before < 0.30
    assert model(task.example_input(3)).shape == (3, 10)


def test_heads_removed_exactly(encoder: nn.Module, ids: torch.Tensor) -> None:
    report = prune_(encoder, MagnitudeConfig(pattern="heads", sparsity=0.5), example_inputs=ids)
    heads = [m.num_heads for m in encoder.modules() if hasattr(m, "num_heads")]
    assert heads == [4, 4, 4, 4]
    # Per layer: query/key/value lose 4 heads x 8 dims of outputs (and biases), the output projection its inputs.
    removed = 4 * (3 * (32 * 64 + 32) + 64 * 32)
    assert report.params_before - report.params_after == removed
    assert report.macs_after < report.macs_before
    assert encoder(ids).shape == (2, 16, 64)


def test_channels_on_transformer_prune_mlp_neurons_only(encoder: nn.Module, ids: torch.Tensor) -> None:
    prune_(encoder, MagnitudeConfig(pattern="channels", sparsity=0.5), example_inputs=ids)
    layer = encoder.encoder.layer[0]
    assert layer.intermediate.dense.out_features == 64
    assert layer.attention.self.query.out_features == 64 and encoder(ids).shape == (2, 16, 64)


def test_blocks_dropped_like_distilbert(encoder: nn.Module, ids: torch.Tensor) -> None:
    report = prune_(encoder, MagnitudeConfig(pattern="blocks", sparsity=0.5), example_inputs=ids)
    assert len(report.removed) == 2
    assert sum(isinstance(b, SkipBlock) for b in encoder.encoder.layer) == 2
    assert 0.45 < report.params_after / report.params_before < 0.6
    assert encoder(ids).shape == (2, 16, 64)


@pytest.mark.parametrize("pattern", ["heads", "channels", "blocks"])
def test_shrunk_encoder_saves_and_loads(pattern: str, encoder: nn.Module, ids: torch.Tensor, tmp_path: Path) -> None:
    prune_(encoder, MagnitudeConfig(pattern=pattern, sparsity=0.5), example_inputs=ids)
    save_model(encoder, tmp_path, ArchSpec("pruneops.models.encoder:build", ENCODER))
    torch.testing.assert_close(load_model(tmp_path)(ids), encoder(ids))


def test_structured_needs_example_inputs(encoder: nn.Module) -> None:
    with pytest.raises(PruningError, match="needs example_inputs"):
        prune_(encoder, MagnitudeConfig(pattern="heads", sparsity=0.5))


def test_heads_need_attention(digits_baseline: nn.Module) -> None:
    with pytest.raises(PruningError, match="needs attention modules"):
        prune_(copy.deepcopy(digits_baseline), MagnitudeConfig(pattern="heads", sparsity=0.5),
               example_inputs=task.example_input(1))  # fmt: skip


def test_too_many_blocks(encoder: nn.Module, ids: torch.Tensor) -> None:
    with pytest.raises(PruningError, match="would drop 4 of 4 blocks"):
        prune_(encoder, MagnitudeConfig(pattern="blocks", sparsity=0.95), example_inputs=ids)
