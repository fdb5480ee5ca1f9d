"""Every attribute structured pruning changes survives save and load (issue 14, point 4).

Three architectures (a LayerNorm residual MLP pruneops never saw, a ResNet-style CNN and
the transformer encoder) for each structured pattern that applies to them: the reloaded
model must give the outputs of the model in memory, and a save that loses an attribute is
refused by :func:`pruneops.modelio.verify_saved`, the check registration runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from pruneops.errors import ModelFormatError
from pruneops.modelio import ARCH_FILE, ArchSpec, build_model, save_model, verify_saved
from pruneops.probe import VALUES, record
from pruneops.pruning import MagnitudeConfig, prune_

pytestmark = pytest.mark.unit

MLP = ArchSpec("tests.foreign.models:ResidualMLP", {"inputs": 30, "hidden": 64, "classes": 2, "blocks": 3})
RESNET = ArchSpec("pruneops.models.resnet:build", {"widths": [16, 32], "blocks": 1})
ENCODER = ArchSpec(
    "pruneops.models.encoder:build",
    {"vocab_size": 100, "hidden": 64, "layers": 4, "heads": 8, "intermediate": 128, "max_positions": 32},
)


def _mlp_input() -> torch.Tensor:
    return torch.randn(8, 30, generator=torch.Generator().manual_seed(1))


def _image_input() -> torch.Tensor:
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _token_input() -> torch.Tensor:
    return torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(1))


CASES: dict[str, tuple[ArchSpec, Callable[[], torch.Tensor]]] = {
    "mlp": (MLP, _mlp_input),
    "resnet": (RESNET, _image_input),
    "encoder": (ENCODER, _token_input),
}


@pytest.fixture(autouse=True)
def _trust_the_test_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEOPS_TRUSTED_MODULES", "tests.foreign")


def _pruned(case: str, pattern: str, folder: Path) -> tuple[nn.Module, torch.Tensor]:
    spec, make_input = CASES[case]
    torch.manual_seed(0)
    model = build_model(spec).eval()
    inputs = make_input()
    prune_(model, MagnitudeConfig(pattern=pattern, sparsity=0.5), example_inputs=inputs)
    save_model(model, folder, spec, record(model, inputs, VALUES))
    return model, inputs


@pytest.mark.parametrize(
    ("case", "pattern"),
    [
        ("mlp", "channels"),
        ("mlp", "blocks"),
        ("resnet", "channels"),
        ("encoder", "channels"),
        ("encoder", "heads"),
        ("encoder", "blocks"),
    ],
)
def test_pruned_model_reloads_with_the_same_outputs(case: str, pattern: str, tmp_path: Path) -> None:
    model, inputs = _pruned(case, pattern, tmp_path)
    loaded = verify_saved(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), model(inputs))
    shapes = {name: tuple(t.shape) for name, t in loaded.state_dict().items()}
    assert shapes == {name: tuple(t.shape) for name, t in model.state_dict().items()}


def test_layernorm_shape_is_recorded(tmp_path: Path) -> None:
    """The regression: ``weight of shape [32] and normalized_shape = [64]`` on reload."""
    model, _ = _pruned("mlp", "channels", tmp_path)
    overrides = json.loads((tmp_path / ARCH_FILE).read_text())["overrides"]
    assert overrides["norm"] == {"normalized_shape": [32]}
    assert verify_saved(tmp_path).norm.normalized_shape == (32,) == model.norm.normalized_shape


def test_a_lost_attribute_refuses_the_save(tmp_path: Path) -> None:
    _pruned("mlp", "channels", tmp_path)
    arch = json.loads((tmp_path / ARCH_FILE).read_text())
    del arch["overrides"]["norm"]
    (tmp_path / ARCH_FILE).write_text(json.dumps(arch))
    with pytest.raises(ModelFormatError, match="normalized_shape"):
        verify_saved(tmp_path)


def test_lost_head_count_changes_outputs_and_is_refused(tmp_path: Path) -> None:
    _pruned("encoder", "heads", tmp_path)
    arch = json.loads((tmp_path / ARCH_FILE).read_text())
    for attrs in arch["overrides"].values():
        attrs.pop("num_heads", None)
    (tmp_path / ARCH_FILE).write_text(json.dumps(arch))
    with pytest.raises(ModelFormatError):
        verify_saved(tmp_path)
