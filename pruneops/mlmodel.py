"""Make a pruneops model folder an MLflow model that plain MLflow loads.

Every registered version gets an ``MLmodel`` beside its pickle-free pruneops files
(``arch.json``, ``model.safetensors``, ``probe.safetensors``): an ``onnx`` flavor and a
``python_function`` flavor whose loader is MLflow's own ``mlflow.onnx`` on ONNX Runtime, a
tensor signature and an input example, both taken from the model's probe. So
``mlflow.pyfunc.load_model("models:/NAME@challenger")``, ``mlflow models serve``, MLServer's
MLflow runtime and KServe's MLflow support all run a pruned version without pruneops
installed. MLflow writes the files (``mlflow.onnx.save_model``); this module only places
them beside the model, keeping the ONNX file pruneops exported and checked.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pruneops.errors import ModelFormatError
from pruneops.probe import Probe

MLMODEL_FILE = "MLmodel"
ONNX_FILE = "model.onnx"
#: What ``mlflow.onnx``'s pyfunc needs to run the model, pinned to the versions that wrote it.
RUNTIME_PACKAGES = ("mlflow", "onnx", "onnxruntime", "numpy")
#: What pruneops' torch-sparse pyfunc needs beside them (and pruneops itself, which is not on PyPI).
TORCH_PACKAGES = ("torch", "safetensors")
TORCH_SPARSE = "torch-sparse"
#: Rows of the probe kept as the MLflow input example (what the UI and ``mlflow models serve`` show).
EXAMPLE_ROWS = 2


def add_mlmodel(folder: str | Path, probe: Probe, runtime: str | None = None) -> Path:
    """Write ``MLmodel`` and MLflow's environment and example files into ``folder``; return its path.

    ``folder`` must hold ``model.onnx``; its signature and input example come from ``probe``
    (the model's own inputs and outputs), so they describe the served model exactly. A
    version served with ``torch-sparse`` (``runtime``) gets pruneops' torch loader as its
    ``python_function`` (:mod:`pruneops.mlflow_torch`); every other version, MLflow's ONNX one.

    >>> import tempfile, numpy as np, torch
    >>> from pruneops.export import export_onnx
    >>> from pruneops.probe import CLASSES, record
    >>> model = torch.nn.Linear(4, 3).eval()
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = export_onnx(model, torch.randn(2, 4), folder / ONNX_FILE)
    >>> add_mlmodel(folder, record(model, torch.randn(5, 4), CLASSES)).name
    'MLmodel'
    >>> import mlflow  # plain MLflow loads and runs it
    >>> outputs = mlflow.pyfunc.load_model(str(folder)).predict(np.ones((1, 4), np.float32))
    >>> {name: array.shape for name, array in outputs.items()}
    {'output': (1, 3)}
    """
    import mlflow.onnx
    import onnx
    from mlflow.models import infer_signature

    folder = Path(folder)
    if not (folder / ONNX_FILE).is_file():
        raise ModelFormatError(f"{folder} has no {ONNX_FILE}: export the model before writing its MLmodel")
    signature = infer_signature(probe.inputs, probe.outputs)  # the first dimension becomes -1 (batch)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "mlflow"
        mlflow.onnx.save_model(
            onnx.load(str(folder / ONNX_FILE)),
            str(staged),
            signature=signature,
            input_example=probe.inputs[:EXAMPLE_ROWS],
            onnx_execution_providers=["CPUExecutionProvider"],
            # Named, not inferred: inference runs the model in a subprocess (about 2 s a version).
            pip_requirements=requirements(TORCH_PACKAGES if runtime == TORCH_SPARSE else ()),
        )
        for item in staged.iterdir():
            if item.name != ONNX_FILE:  # keep the exported file pruneops checked, byte for byte
                shutil.copy(item, folder / item.name)
    if runtime == TORCH_SPARSE:
        _torch_pyfunc(folder / MLMODEL_FILE)
    return folder / MLMODEL_FILE


def _torch_pyfunc(path: Path) -> None:
    """Point the ``python_function`` flavor at pruneops' torch-sparse loader, reading the whole folder."""
    from mlflow.models import Model

    from pruneops.mlflow_torch import LOADER_MODULE

    mlmodel = Model.load(str(path))
    pyfunc = mlmodel.flavors["python_function"]
    pyfunc["loader_module"] = LOADER_MODULE
    pyfunc.pop("data", None)  # the loader gets the folder: weights, arch.json, probe, model.onnx
    mlmodel.save(str(path))


def requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """The pip requirements written beside the model: the ONNX runtime stack (and ``extra``), pinned.

    >>> [line.split("==")[0] for line in requirements()]
    ['mlflow', 'onnx', 'onnxruntime', 'numpy']
    """
    return pinned((*RUNTIME_PACKAGES, *extra))


def pinned(packages: tuple[str, ...]) -> list[str]:
    """``package==version`` for each installed package, without a local label (``2.13.0+cpu`` -> ``2.13.0``).

    >>> pinned(("numpy",))[0].startswith("numpy==")
    True
    """
    from importlib.metadata import version

    return [f"{package}=={version(package).split('+')[0]}" for package in packages]
