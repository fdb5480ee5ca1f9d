"""Pickle-free model files: round trip, changed widths, corrupt and incomplete folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pruneops.errors import ModelFormatError
from pruneops.modelio import ARCH_FILE, WEIGHTS_FILE, ArchSpec, load_model, save_model
from pruneops.tasks.digits import build, task

pytestmark = pytest.mark.unit


def test_digits_round_trip(tmp_path: Path, digits_baseline: nn.Module) -> None:
    save_model(digits_baseline, tmp_path, task.arch)
    loaded = load_model(tmp_path)
    x = task.example_input(8)
    torch.testing.assert_close(loaded(x), digits_baseline(x))
    assert not loaded.training


def test_no_pickle_in_files(tmp_path: Path, digits_baseline: nn.Module) -> None:
    save_model(digits_baseline, tmp_path, task.arch)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ARCH_FILE, WEIGHTS_FILE]
    # safetensors files start with a little-endian header length then JSON, never a pickle opcode.
    assert (tmp_path / WEIGHTS_FILE).read_bytes()[8:9] == b"{"


def test_changed_widths_are_recorded_and_restored(tmp_path: Path) -> None:
    spec = ArchSpec("pruneops.tasks.digits:build")
    model = build()
    # Shrink the first conv and its batch norm by hand, as a structured pruner would.
    conv, bn, conv2 = model.features[0], model.features[1], model.features[3]
    keep = torch.arange(0, 32, 2)
    conv.weight = nn.Parameter(conv.weight[keep].clone())
    conv.bias = nn.Parameter(conv.bias[keep].clone())
    conv.out_channels = 16
    for name in ("weight", "bias"):
        setattr(bn, name, nn.Parameter(getattr(bn, name)[keep].clone()))
    bn.running_mean, bn.running_var = bn.running_mean[keep].clone(), bn.running_var[keep].clone()
    bn.num_features = 16
    conv2.weight = nn.Parameter(conv2.weight[:, keep].clone())
    conv2.in_channels = 16
    model.eval()
    save_model(model, tmp_path, spec)
    stored = ArchSpec.from_json((tmp_path / ARCH_FILE).read_text())
    assert stored.overrides["features.0"] == {"out_channels": 16}
    assert stored.overrides["features.1"] == {"num_features": 16}
    loaded = load_model(tmp_path)
    assert loaded.features[0].weight.shape == (16, 1, 3, 3)
    x = task.example_input(4)
    torch.testing.assert_close(loaded(x), model(x))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match=r"arch\.json is missing"):
        load_model(tmp_path)


def test_corrupt_weights(tmp_path: Path, digits_baseline: nn.Module) -> None:
    save_model(digits_baseline, tmp_path, task.arch)
    data = (tmp_path / WEIGHTS_FILE).read_bytes()
    (tmp_path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="corrupt"):
        load_model(tmp_path)


def test_weights_that_do_not_fit(tmp_path: Path, digits_baseline: nn.Module) -> None:
    save_model(digits_baseline, tmp_path, task.arch)
    (tmp_path / ARCH_FILE).write_text(ArchSpec("torch.nn:Linear", {"in_features": 2, "out_features": 2}).to_json())
    with pytest.raises(ModelFormatError, match="do not fit"):
        load_model(tmp_path)


def test_malformed_arch(tmp_path: Path, digits_baseline: nn.Module) -> None:
    save_model(digits_baseline, tmp_path, task.arch)
    (tmp_path / ARCH_FILE).write_text("{not json")
    with pytest.raises(ModelFormatError, match="malformed"):
        load_model(tmp_path)


def test_factory_must_be_a_trusted_module_class(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="not trusted"):
        save_model(nn.Linear(2, 2), tmp_path, ArchSpec("builtins:dict"))
    with pytest.raises(ModelFormatError, match=r"not an nn\.Module subclass"):
        save_model(nn.Linear(2, 2), tmp_path, ArchSpec("pruneops.settings:state_dir"))
