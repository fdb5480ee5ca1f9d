"""The versions the serving tests run against: good ones, and what an attacker or an accident registers.

Run in a subprocess by ``conftest.py`` (its registry lives in the stack's ``PRUNEOPS_HOME``);
prints ``{role: version}`` as JSON.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from pruneops.demo import init_demo
from pruneops.export import export_onnx
from pruneops.modelio import ARCH_FILE, WEIGHTS_FILE, save_model
from pruneops.pruning import MagnitudeConfig, prune_
from pruneops.registry import Registry
from pruneops.tasks.digits import task
from tests.attacks import register_unchecked

TASK = "pruneops.tasks.digits:task"
#: A module planted on the server's path; importing it writes PWNED_FILE (proof of code execution).
EVIL_MODULE = "pruneops_attack_evil"


def plant(site: Path, marker: Path) -> None:
    """Write the planted module into ``site`` (the server's PYTHONPATH)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{EVIL_MODULE}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
        "import torch\nclass Net(torch.nn.Linear):\n"
        "    def __init__(self, **kwargs):\n        super().__init__(64, 10)\n"
    )


def _folder(model: nn.Module, root: Path, name: str, onnx: bool = True) -> Path:
    folder = save_model(model, root / name, task.arch, probe=task.probe(model))
    if onnx:
        export_onnx(model, task.example_input(2), folder / "model.onnx")
    return folder


def register_all() -> dict[str, str]:
    registry = Registry()
    tags = {"source": "pipeline", "parent_version": "1", "task": TASK, "gate": "passed", "method": "magnitude",
            "pattern": "channels", "sparsity": "0.75", "runtime": "onnxruntime"}  # fmt: skip
    made = {"baseline": init_demo("digits").version}
    dense = registry.load_model("digits", made["baseline"])
    small = copy.deepcopy(dense)
    prune_(small, MagnitudeConfig(pattern="channels", sparsity=0.5), example_inputs=task.example_input(1))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made["small"] = registry.register("digits", _folder(small, root, "small"), tags=tags).version

        corrupt = _folder(small, root, "corrupt")
        (corrupt / "model.onnx").write_bytes(b"this is not an onnx file")
        made["corrupt"] = register_unchecked(registry, "digits", corrupt, tags)

        # A classifier cut to 7 classes: a valid model of its own, which pruneops registers,
        # but not what clients of a 10-class model can take.
        seven = copy.deepcopy(dense)
        seven.classifier[3] = nn.Linear(seven.classifier[3].in_features, 7)
        made["seven"] = registry.register("digits", _folder(seven, root, "seven"), tags=tags).version

        overflow = copy.deepcopy(dense)
        with torch.no_grad():
            for parameter in overflow.parameters():
                parameter.mul_(1e37)
        made["overflow"] = register_unchecked(registry, "digits", _folder(overflow, root, "overflow"), tags)

        nan = copy.deepcopy(dense)
        with torch.no_grad():
            nan.classifier[3].weight[0, 0] = float("nan")
        made["nan"] = register_unchecked(registry, "digits", _folder(nan, root, "nan"), tags)

        # No model.onnx: the server would export it from arch.json, so it resolves the factory.
        untrusted = _folder(dense, root, "untrusted", onnx=False)
        arch = json.loads((untrusted / ARCH_FILE).read_text())
        arch.update(factory=f"{EVIL_MODULE}:Net", kwargs={}, overrides={})
        (untrusted / ARCH_FILE).write_text(json.dumps(arch))
        made["untrusted"] = register_unchecked(registry, "digits", untrusted, tags)

        evil_task = _folder(dense, root, "evil_task", onnx=False)
        made["evil_task"] = register_unchecked(registry, "digits", evil_task, {**tags, "task": f"{EVIL_MODULE}:Net"})

        made["tampered"] = registry.register("digits", _folder(small, root, "tampered"), tags=tags).version
    source = registry.artifact_location("digits", made["tampered"]).removeprefix("file://")
    stored = Path(source) / WEIGHTS_FILE
    stored.write_bytes(stored.read_bytes()[:-4] + b"\x00\x00\x00\x00")  # after registration, in the store
    return made


if __name__ == "__main__":
    assert os.environ.get("PRUNEOPS_HOME"), "run with the stack's PRUNEOPS_HOME"
    print(json.dumps(register_all()))
