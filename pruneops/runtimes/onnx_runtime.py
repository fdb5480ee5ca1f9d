"""ONNX Runtime: the model exported with ``pruneops.export``, run on CPU or the CUDA EP.

The CUDA execution provider comes with ``onnxruntime-gpu`` (``pip install pruneops[gpu]``).
If the provider asked for is missing, or ONNX Runtime quietly falls back to another one
when the session starts, the runtime raises instead of measuring the wrong device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneops.errors import RuntimeUnavailable
from pruneops.runtimes import Runtime, Session

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OnnxSession(Session):
    def __init__(self, session: Any, path: Path, evidence: dict[str, Any]) -> None:
        self.session, self.path, self.evidence = session, path, evidence
        self.input_name = session.get_inputs()[0].name

    def run(self, batch: torch.Tensor) -> Any:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch.numpy())})[0]

    def model_bytes(self) -> int:
        return self.path.stat().st_size


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def check(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeUnavailable("onnxruntime is not installed") from None
        wanted = _PROVIDERS[self.target]
        if wanted not in ort.get_available_providers():
            raise RuntimeUnavailable(
                f"onnxruntime has no {wanted} here (available: {', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu (pruneops[gpu]) for cuda"
            )

    def load(self, model: nn.Module, example: torch.Tensor, workdir: Path, name: str = "model") -> Session:
        from pruneops.export import export_onnx

        exported = export_onnx(model, example, workdir / f"{name}.onnx")
        return self.open(exported.path)

    def open(self, path: Path) -> OnnxSession:
        """Open an existing ONNX file (a corrupt one raises :class:`ExportError`)."""
        import onnxruntime as ort

        from pruneops.export import check_onnx

        check_onnx(path)
        wanted = _PROVIDERS[self.target]
        session = ort.InferenceSession(str(path), providers=[wanted])
        if session.get_providers()[0] != wanted:
            raise RuntimeUnavailable(f"onnxruntime fell back to {session.get_providers()[0]} instead of {wanted}")
        evidence = {
            "runtime": self.name,
            "provider": wanted,
            "onnxruntime": ort.__version__,
            "onnx_bytes": path.stat().st_size,
        }
        return OnnxSession(session, path, evidence)
