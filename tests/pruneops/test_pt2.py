"""Exported programs (.pt2, MLflow's default pytorch format) as a registry writer could craft them.

Each crafted archive is first shown to run code under plain ``torch.export.load`` (the marker
file appears), then shown to be refused by :func:`pruneops.pt2.load_exported` before torch
reads it (no marker).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pruneops.errors import ModelFormatError, UntrustedCodeError
from pruneops.pt2 import check_archive, load_exported

pytestmark = pytest.mark.unit


class ResidualMLP(nn.Module):
    """A model pruneops never saw: a residual block with LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.norm, self.hidden, self.out = (
            nn.Linear(8, 16),
            nn.LayerNorm(16),
            nn.Linear(16, 16),
            nn.Linear(16, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(self.norm(h + torch.relu(self.hidden(h))))


@pytest.fixture(scope="module")
def mlflow_pt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    """A model saved the way teams register it: ``mlflow.pytorch`` with its default pt2 format."""
    import mlflow

    torch.manual_seed(0)
    model = ResidualMLP().eval()
    folder = tmp_path_factory.mktemp("mlflow") / "model"
    example = np.random.default_rng(0).random((4, 8), dtype=np.float32)
    mlflow.pytorch.save_model(model, str(folder), input_example=example, pip_requirements=["torch"])
    return folder / "data" / "model.pt2", model


def test_an_mlflow_pt2_model_loads_and_matches(mlflow_pt2: tuple[Path, nn.Module]) -> None:
    path, model = mlflow_pt2
    check_archive(path)
    loaded = load_exported(path)
    x = torch.randn(5, 8)
    torch.testing.assert_close(loaded(x), model(x))


def rewrite(source: Path, target: Path, change: Callable[[str, bytes], bytes | None], add: dict[str, bytes]) -> Path:
    """Copy a pt2 zip, passing each entry through ``change`` (None drops it) and adding ``add``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        root = old.namelist()[0].split("/")[0]
        for name in old.namelist():
            data = change(name.removeprefix(root + "/"), old.read(name))
            if data is not None:
                new.writestr(name, data)
        for name, data in add.items():
            new.writestr(f"{root}/{name}", data)
    return target


class _Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def edit_json(inner: str, edit: Callable[[dict], None]) -> Callable[[str, bytes], bytes | None]:
    def change(name: str, data: bytes) -> bytes | None:
        if name != inner:
            return data
        document = json.loads(data)
        edit(document)
        return json.dumps(document).encode()

    return change


def pickled_weight(marker: Path) -> tuple[Callable[[str, bytes], bytes | None], dict[str, bytes]]:
    def edit(config: dict) -> None:
        entry = next(iter(config["config"].values()))
        entry.update(path_name="weight_99", use_pickle=True)

    return edit_json("data/weights/model_weights_config.json", edit), {
        "data/weights/weight_99": pickle.dumps(_Touch(marker))
    }


def os_system_target(marker: Path) -> tuple[Callable[[str, bytes], bytes | None], dict[str, bytes]]:
    def edit(program: dict) -> None:
        program["verifiers"] = []  # torch's verifier would refuse the target; the archive can drop it
        node = program["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.os.system"
        node["inputs"] = [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}]

    return edit_json("models/model.json", edit), {}


def evaluated_expression(marker: Path) -> tuple[Callable[[str, bytes], bytes | None], dict[str, bytes]]:
    payload = f"__import__('os').system('touch {marker}')"

    def edit(program: dict) -> None:
        for value in program["graph_module"]["graph"]["tensor_values"].values():
            for size in value["sizes"]:
                if "as_expr" in size:
                    size["as_expr"]["expr_str"] = payload
                    return
        raise AssertionError("no symbolic size to poison")

    return edit_json("models/model.json", edit), {}


def guard_code(marker: Path) -> tuple[Callable[[str, bytes], bytes | None], dict[str, bytes]]:
    def edit(program: dict) -> None:
        program["guards_code"] = [f"__import__('os').system('touch {marker}')"]

    return edit_json("models/model.json", edit), {}


def pickled_sample_inputs(marker: Path) -> tuple[Callable[[str, bytes], bytes | None], dict[str, bytes]]:
    def change(name: str, data: bytes) -> bytes | None:
        return pickle.dumps(_Touch(marker)) if name == "data/sample_inputs/model.pt" else data

    return change, {}


#: Archives shown to run code under torch 2.13's own loader.
ATTACKS = {
    "eval in a symbolic shape": evaluated_expression,
    "exec in guard code": guard_code,
    "pickled sample inputs": pickled_sample_inputs,
}
#: Archives the scanner refuses although torch 2.13 happens not to run them: a pickled weight is
#: read by torch.load(weights_only=False) but this payload fails its magic-number check first,
#: and torch's verifier refuses a torch.os.system target. Neither is left to torch to decide.
ALSO_REFUSED = {"pickled weight": pickled_weight, "torch.os.system as a node target": os_system_target}

LOAD_AND_RUN = "import sys, torch; module = torch.export.load(sys.argv[1]).module(); module(torch.randn(4, 8))"


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_crafted_archive_runs_code_in_torch_and_is_refused_here(
    mlflow_pt2: tuple[Path, nn.Module], tmp_path: Path, attack: str
) -> None:
    marker = tmp_path / "pwned"
    change, add = ATTACKS[attack](marker)
    crafted = rewrite(mlflow_pt2[0], tmp_path / "crafted.pt2", change, add)
    # What plain torch does with it, in a separate process: the attack is real.
    subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(crafted)], capture_output=True, timeout=120)
    assert marker.exists(), f"{attack}: torch.export.load did not run the payload; the test proves nothing"
    marker.unlink()
    with pytest.raises(UntrustedCodeError):
        load_exported(crafted)
    assert not marker.exists()


@pytest.mark.parametrize("attack", list(ALSO_REFUSED))
def test_pickles_and_foreign_targets_are_refused_too(
    mlflow_pt2: tuple[Path, nn.Module], tmp_path: Path, attack: str
) -> None:
    change, add = ALSO_REFUSED[attack](tmp_path / "pwned")
    with pytest.raises(UntrustedCodeError, match=r"pickled|not an ATen"):
        load_exported(rewrite(mlflow_pt2[0], tmp_path / "crafted.pt2", change, add))
    assert not (tmp_path / "pwned").exists()


def test_other_entries_and_broken_files_are_refused(mlflow_pt2: tuple[Path, nn.Module], tmp_path: Path) -> None:
    extra = rewrite(mlflow_pt2[0], tmp_path / "extra.pt2", lambda _n, d: d, {"data/aotinductor/model.so": b"\x7fELF"})
    with pytest.raises(UntrustedCodeError, match="aotinductor"):
        check_archive(extra)
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(ModelFormatError, match="not a pt2 archive"):
        load_exported(tmp_path / "junk.pt2")
