"""ONNX export: parity with torch, corrupt files, models that cannot be exported."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from pruneops.errors import ExportError
from pruneops.export import check_onnx, export_onnx, parity
from pruneops.pruning import MagnitudeConfig, glob_filter, make_permanent, prune_
from pruneops.runtimes.onnx_runtime import OnnxRuntime
from pruneops.tasks.digits import task

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "config", [None, MagnitudeConfig(pattern="channels", sparsity=0.5), MagnitudeConfig(pattern="2:4")],
    ids=["dense", "channels", "2:4"],
)  # fmt: skip
def test_ort_parity_on_digits(config: MagnitudeConfig | None, digits_baseline: nn.Module, tmp_path: Path) -> None:
    model = copy.deepcopy(digits_baseline)
    if config is not None:
        prune_(model, config, glob_filter(exclude=["features.0"]), example_inputs=task.example_input(1))
        make_permanent(model)
    result = export_onnx(model, task.example_input(2), tmp_path / "m.onnx")
    assert result.bytes == (tmp_path / "m.onnx").stat().st_size and result.opset >= 18
    for batch in (1, 7, 64):  # the batch dimension is dynamic
        diff = parity(model, result.path, task.example_input(batch))
        assert diff.within(atol=1e-4), diff
    if config is not None and config.pattern == "channels":
        dense = export_onnx(digits_baseline, task.example_input(2), tmp_path / "dense.onnx")
        assert result.bytes < 0.35 * dense.bytes


def test_corrupt_onnx_is_refused(digits_baseline: nn.Module, tmp_path: Path) -> None:
    path = export_onnx(digits_baseline, task.example_input(2), tmp_path / "m.onnx").path
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ExportError, match="is not a valid ONNX model"):
        check_onnx(path)
    with pytest.raises(ExportError, match="is not a valid ONNX model"):
        OnnxRuntime("cpu").open(path)


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: torch.export cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum().item() > 0:
            return x * 2
        return x - 1


def test_model_that_cannot_export(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="cannot export DataDependent to ONNX: Failed to export") as info:
        export_onnx(DataDependent(), torch.randn(2, 4), tmp_path / "x.onnx")
    assert "\x1b[" not in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "x.onnx").exists()
