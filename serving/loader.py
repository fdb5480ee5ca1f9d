"""Load a registry version into something that answers inference: download, open, warm up, smoke test.

A version is served with the runtime recorded on it (``pruneops.runtime``; the dense
baseline has none and is served with ONNX Runtime). ONNX Runtime uses the version's
``model/model.onnx``, or an export of its safetensors made with the version's task when the
file is absent (baselines registered without one). ``torch-sparse`` versions need a CUDA GPU
here; the server refuses them otherwise rather than serve another runtime under their name.
Every load ends with a warm-up and a smoke inference whose output must be finite, so a
corrupt version never serves.

>>> # served = load_version(Registry(), "digits", "champion", alias="champion")
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pruneops.errors import ModelFormatError
from pruneops.registry import Registry


@dataclass
class ServedVersion:
    """One loaded version: an ONNX Runtime session and what the server needs to describe it."""

    name: str
    version: str
    alias: str
    session: Any
    input_name: str
    input_shape: list[int | None]
    output_name: str
    tags: dict[str, str] = field(default_factory=dict)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Outputs for a float32 batch shaped ``[N, *input_shape[1:]]``."""
        outputs: np.ndarray = self.session.run([self.output_name], {self.input_name: batch})[0]
        return outputs

    def tag(self, key: str) -> str:
        return self.tags.get(f"pruneops.{key}", "")


def load_version(registry: Registry, name: str, ref: str, alias: str, warmup: int = 3) -> ServedVersion:
    """Download and open ``name`` at ``ref`` (version or alias), warm it up and smoke-test it."""
    import onnxruntime as ort

    info = registry.resolve(name, ref)
    runtime = info.tag("runtime") or "onnxruntime"
    if runtime not in ("onnxruntime", "torch", "torch-compile"):
        raise ModelFormatError(f"{name} v{info.version} was validated on {runtime}, which this server cannot run")
    with tempfile.TemporaryDirectory() as tmp:
        folder = registry.download(name, info.version, tmp)
        onnx_path = folder / "model.onnx"
        if not onnx_path.is_file():
            onnx_path = export_for_serving(folder, info.tag("task"), Path(tmp) / "exported.onnx")
        try:
            session = ort.InferenceSession(
                str(onnx_path), sess_options=_session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # noqa: BLE001 - ORT raises its own types for corrupt files
            raise ModelFormatError(f"{name} v{info.version}: model.onnx does not load: {err}") from None
    model_input, model_output = session.get_inputs()[0], session.get_outputs()[0]
    shape = [d if isinstance(d, int) else None for d in model_input.shape]
    served = ServedVersion(
        name, info.version, alias, session, model_input.name, shape, model_output.name, dict(info.tags)
    )
    smoke = np.zeros([1, *[d or 1 for d in shape[1:]]], dtype=np.float32)
    for _ in range(max(warmup, 1)):
        out = served.run(smoke)
    if out.shape[0] != 1 or not np.isfinite(out).all():
        raise ModelFormatError(f"{name} v{info.version} failed its smoke inference (shape {out.shape}, non-finite?)")
    return served


def _session_options() -> Any:
    """ORT options for a server: intra-op threads sleep between requests instead of spinning.

    ORT's default keeps its pool spinning after each run for the next one, which on 2 cores
    burned a whole core at 50 requests/s and starved the server's own event loop and the
    sidecar. ``PRUNEOPS_ORT_THREADS`` sets the intra-op thread count (default: ORT's).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = int(os.environ.get("PRUNEOPS_ORT_THREADS", "0"))
    return options


def export_for_serving(folder: Path, task_path: str | None, target: Path) -> Path:
    """Export a registered model folder that has no ``model.onnx`` (its task gives the example input)."""
    from pruneops.export import export_onnx
    from pruneops.modelio import load_model
    from pruneops.tasks import load_task

    if not task_path:
        raise ModelFormatError(f"{folder} has no model.onnx and no pruneops.task tag to export one")
    model = load_model(folder)
    return export_onnx(model, load_task(task_path).example_input(2), target).path
