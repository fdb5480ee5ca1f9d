"""Source models as teams log them with ``mlflow.pytorch``: pt2 comes in, pickle and the rest are refused."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from pruneops.errors import ModelFormatError, UntrustedCodeError
from pruneops.graph import STRUCTURED_REFUSAL
from pruneops.modelio import ARCH_FILE, PROGRAM_FILE, save_model, verify_saved
from pruneops.probe import CLASSES, record
from pruneops.pruning import MagnitudeConfig, make_permanent, prune_
from pruneops.sources import PT2, check_source, import_model
from tests.foreign.models import ResidualMLP

pytestmark = pytest.mark.unit
ROWS = np.random.default_rng(0).normal(size=(8, 32)).astype(np.float32)


def team_model() -> nn.Module:
    torch.manual_seed(0)
    return ResidualMLP(inputs=32, hidden=64, classes=4, blocks=2).eval()


@pytest.fixture
def pt2_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "pt2"
    mlflow.pytorch.save_model(team_model(), str(folder), input_example=ROWS, serialization_format="pt2")
    return folder


def test_pt2_imports_with_real_layers_and_same_outputs(pt2_folder: Path) -> None:
    module, _spec = import_model(pt2_folder)
    linears = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    assert linears == ["embed", "blocks.0.up", "blocks.0.down", "blocks.1.up", "blocks.1.down", "head"]
    assert list(module.state_dict()) == list(team_model().state_dict())
    with torch.no_grad():
        torch.testing.assert_close(module(torch.from_numpy(ROWS)), team_model()(torch.from_numpy(ROWS)))
        assert module(torch.zeros(3, 32)).shape == (3, 4), "the batch dimension stays dynamic"


def test_pruned_program_saves_reloads_and_keeps_its_zeros(pt2_folder: Path, tmp_path: Path) -> None:
    module, spec = import_model(pt2_folder)
    prune_(module, MagnitudeConfig(pattern="2:4"))
    make_permanent(module)
    inputs = torch.from_numpy(ROWS)
    folder = save_model(module, tmp_path / "saved", spec, probe=record(module, inputs, CLASSES))
    assert (folder / PROGRAM_FILE).is_file()
    loaded = verify_saved(folder)
    assert float((loaded.get_submodule("blocks.0.up").weight == 0).float().mean()) == 0.5
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), module(inputs))


def test_a_program_with_structural_overrides_is_refused(pt2_folder: Path, tmp_path: Path) -> None:
    module, spec = import_model(pt2_folder)
    folder = save_model(module, tmp_path / "saved", spec, probe=record(module, torch.from_numpy(ROWS), CLASSES))
    arch = json.loads((folder / ARCH_FILE).read_text())
    arch["overrides"] = {"embed": {"out_features": 32}}
    (folder / ARCH_FILE).write_text(json.dumps(arch))
    with pytest.raises(ModelFormatError, match="structured pruning"):
        verify_saved(folder)


class Payload:
    """What a pickle can do when loaded: here, write a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture
def pickle_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "pickle"
    mlflow.pytorch.save_model(team_model(), str(folder), input_example=ROWS, serialization_format="pickle")
    return folder


def test_allowed_pickle_of_trusted_classes_loads_and_saves_as_a_program(
    pickle_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRUNEOPS_ALLOW_PICKLE", "true")
    monkeypatch.setenv("PRUNEOPS_TRUSTED_MODULES", "tests.foreign")
    module, spec = import_model(pickle_folder)
    inputs = torch.from_numpy(ROWS)
    folder = save_model(module, tmp_path / "saved", spec, probe=record(module, inputs, CLASSES))
    assert (folder / PROGRAM_FILE).is_file() and not list(folder.glob("*.pth"))
    with torch.no_grad():
        torch.testing.assert_close(verify_saved(folder)(inputs), team_model()(inputs))


def test_allowed_pickle_still_refuses_untrusted_classes(pickle_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEOPS_ALLOW_PICKLE", "true")  # but tests.foreign is not trusted
    with pytest.raises(UntrustedCodeError, match=r"module 'tests\.foreign\.models' is not trusted"):
        import_model(pickle_folder)


def test_allowed_pickle_refuses_a_payload(pickle_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEOPS_ALLOW_PICKLE", "true")
    monkeypatch.setenv("PRUNEOPS_TRUSTED_MODULES", "tests.foreign")
    marker = tmp_path / "pwned"
    torch.save(Payload(marker), pickle_folder / "data" / "model.pth")
    with pytest.raises(UntrustedCodeError, match="refusing to unpickle"):
        import_model(pickle_folder)
    assert not marker.exists()


def test_pickle_format_is_refused_without_being_opened(tmp_path: Path) -> None:
    folder = tmp_path / "pickle"
    mlflow.pytorch.save_model(team_model(), str(folder), input_example=ROWS, serialization_format="pickle")
    marker = tmp_path / "pwned"
    torch.save(Payload(marker), folder / "data" / "model.pth")  # the file a registry writer controls
    with pytest.raises(ModelFormatError, match="saved with pickle"):
        import_model(folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("files", "mlmodel", "pattern", "message"),
    [
        (["MLmodel", "data/model.pt2"], {"flavors": {"pytorch": {"model_data": "data"}}}, "channels", "structured"),
        (["MLmodel", "data/model.pt2"], {"flavors": {"pytorch": {"model_data": "data"}}}, "heads", "structured"),
        (["MLmodel", "model.pkl"], {"flavors": {"sklearn": {}, "python_function": {}}}, None, "'sklearn'"),
        (["MLmodel", "model.safetensors"], {"flavors": {"transformers": {}}}, None, "pruneops imports encoders"),
        (["notes.txt"], None, None, "neither a pruneops model"),
    ],
)
def test_what_cannot_be_pruned_is_named(files: list[str], mlmodel: dict | None, pattern: str | None,
                                        message: str) -> None:  # fmt: skip
    with pytest.raises(ModelFormatError, match=message):
        check_source(files, mlmodel, pattern)


def test_formats_that_apply() -> None:
    assert check_source(["arch.json", "MLmodel"], {"flavors": {"onnx": {}}}, "channels") == "pruneops"
    pt2 = {"flavors": {"pytorch": {"model_data": "data"}}}
    assert check_source(["MLmodel", "data/model.pt2"], pt2, "2:4") == PT2
    assert STRUCTURED_REFUSAL.startswith("structured pruning")
