"""MLflow's ``python_function`` for versions served with torch-sparse (2:4 on sparse tensor cores).

A version validated on ``torch-sparse`` is served by ``pruneops serve --device cuda`` as fp16
torch with its 2:4 Linear weights as semi-structured sparse tensors, not by ONNX Runtime. Its
``MLmodel`` therefore names this module as the pyfunc loader (the ``onnx`` flavor stays beside
it), so ``mlflow.pyfunc.load_model(...)`` runs what the server runs: on a CUDA GPU of compute
capability 8.0 or more, the same conversion (:class:`pruneops.runtimes.torch_sparse.TorchSparseRuntime`);
elsewhere the same weights in fp32 torch on the CPU, with a warning. The model is rebuilt by
:func:`pruneops.modelio.load_model`, under the same trust rules as everywhere (no pickle; the
factory must be trusted). ``predict`` answers as ONNX Runtime's pyfunc does: ``{output name: array}``.

Usage (needs a registry)::

    mlflow.pyfunc.load_model("models:/digits@challenger").predict(x)  -> {"logits": array(...)}
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pruneops.errors import RuntimeUnavailable

log = logging.getLogger(__name__)
LOADER_MODULE = "pruneops.mlflow_torch"


class SparsePyfunc:
    """A loaded version: ``predict`` takes a numpy batch and returns ``{output name: outputs}``."""

    def __init__(self, folder: Path) -> None:
        from pruneops.modelio import load_model
        from pruneops.probe import Probe
        from pruneops.runtimes.torch_sparse import TorchSparseRuntime

        model = load_model(folder)
        self.output_name = _output_name(folder)
        self._run: Callable[[torch.Tensor], Any]
        runtime = TorchSparseRuntime("cuda")
        try:
            runtime.check()
        except RuntimeUnavailable as err:
            log.warning("%s; running the version in fp32 torch on the CPU instead", err)
            self._run = model.eval()
            self.device = "cpu"
            return
        example = torch.from_numpy(Probe.load(folder).inputs[:1])
        self._run = runtime.load(model, example, folder).run
        self.device = "cuda"

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Outputs for a batch (numpy array, or anything numpy turns into one), as float32."""
        batch = torch.from_numpy(np.ascontiguousarray(np.asarray(model_input)))
        with torch.no_grad():
            out = self._run(batch)
        out = out.detach().float().cpu() if isinstance(out, torch.Tensor) else torch.as_tensor(out).float()
        return {self.output_name: out.numpy()}


def _output_name(folder: Path) -> str:
    """The output's name as clients know it from the version's ONNX file (``output`` without one)."""
    from pruneops.export import port_names
    from pruneops.mlmodel import ONNX_FILE

    return port_names(folder / ONNX_FILE)[1] if (folder / ONNX_FILE).is_file() else "output"


def _load_pyfunc(path: str) -> SparsePyfunc:
    """MLflow's entry point: ``path`` is the model folder (the flavor's ``data`` is the folder itself)."""
    return SparsePyfunc(Path(path))
