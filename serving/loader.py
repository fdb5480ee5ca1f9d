"""Load a registry version into something that answers inference: download, open, warm up, smoke test.

A version is served with the runtime recorded on it (``pruneops.runtime``; the dense
baseline has none and is served with ONNX Runtime), on the server's ``device``:

- ``onnxruntime`` (and ``torch``/``torch-compile``, whose versions carry the same
  ``model/model.onnx``): ONNX Runtime on the CPU, or with ``device="cuda"`` on its CUDA
  provider (``onnxruntime-gpu``). If CUDA is asked for and ONNX Runtime would fall back to
  the CPU, the load fails instead. Without ``model.onnx`` (baselines registered without
  one) the safetensors are exported with the version's task first.
- ``torch-sparse``: fp16 torch on the GPU with the 2:4 Linear weights as semi-structured
  sparse tensors (``pruneops.runtimes.torch_sparse``, the same conversion validation
  measured). It needs ``device="cuda"``; a CPU server refuses such a version rather than
  serve another runtime under its name.

Before anything is parsed, the downloaded files are checked against the digests recorded at
registration (:meth:`Registry.download`). Every load ends with a warm-up and a semantic smoke
test on the version's probe (:mod:`pruneops.probe`): the runtime that will serve must give
finite outputs, of the shape clients get now from the version being served, agreeing with
the outputs recorded when the model was saved. A classifier cut to 7 outputs, weights
scaled to overflow, or an ONNX file that is not the registered model never serve.

Usage (needs a registry)::

    served = load_version(Registry(), "digits", "champion", alias="champion", device="cpu")
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pruneops.errors import ModelFormatError, RuntimeUnavailable
from pruneops.mlmodel import ONNX_FILE
from pruneops.probe import Probe, check_outputs
from pruneops.registry import Registry

DEVICES = ("cpu", "cuda")
#: A batch whose expected run time is under this runs on the server's event loop: a thread
#: hop costs more than a small model's whole inference, and the loop is blocked no longer
#: than this (``ServedVersion.inline_rows``).
INLINE_BUDGET_S = 0.001
#: ONNX input types the server takes, as V2 datatypes and numpy dtypes (token ids are int64).
INPUT_TYPES = {"tensor(float)": ("FP32", np.float32), "tensor(int64)": ("INT64", np.int64)}
_NUMPY_TYPES = {v2: np.dtype(dtype) for v2, dtype in INPUT_TYPES.values()}


@dataclass
class ServedVersion:
    """One loaded version: a session with ONNX Runtime's ``run`` interface and its description."""

    name: str
    version: str
    alias: str
    session: Any
    input_name: str
    input_shape: list[int | None]
    output_name: str
    tags: dict[str, str] = field(default_factory=dict)
    output_shape: tuple[int, ...] = ()  # without the batch dimension, from the probe
    input_datatype: str = "FP32"  # the V2 datatype of the input: FP32, or INT64 for token ids
    inline_rows: int = 0  # batches up to this many rows run on the event loop (see INLINE_BUDGET_S)

    @property
    def input_dtype(self) -> np.dtype[Any]:
        """The numpy type a request's input is converted to."""
        return _NUMPY_TYPES[self.input_datatype]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Outputs for a batch of :attr:`input_dtype` shaped ``[N, *input_shape[1:]]``."""
        outputs: np.ndarray = self.session.run([self.output_name], {self.input_name: batch})[0]
        return outputs

    def tag(self, key: str) -> str:
        return self.tags.get(f"pruneops.{key}", "")


def load_version(
    registry: Registry,
    name: str,
    ref: str,
    alias: str,
    warmup: int = 3,
    device: str = "cpu",
    output_shape: tuple[int, ...] | None = None,
) -> ServedVersion:
    """Download, verify and open ``name`` at ``ref`` on ``device``, warm it up and smoke-test it on its probe.

    ``output_shape`` is what clients get now (the served version's outputs, without the
    batch dimension); a new version must keep it.

    >>> import torch
    >>> from pruneops.modelio import ArchSpec, save_model
    >>> from pruneops.probe import CLASSES, record
    >>> registry = Registry("sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    >>> model, spec = torch.nn.Linear(4, 3), ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 3})
    >>> folder = save_model(model, tempfile.mkdtemp(), spec, probe=record(model, torch.randn(5, 4), CLASSES))
    >>> _ = registry.register("linear", folder)
    >>> served = load_version(registry, "linear", "1", "champion")
    >>> served.version, served.input_shape, served.output_shape, served.run(np.ones((2, 4), np.float32)).shape
    ('1', [None, 4], (3,), (2, 3))
    >>> load_version(registry, "linear", "1", "champion", output_shape=(10,))  # clients get 10 outputs today
    Traceback (most recent call last):
    ...
    pruneops.errors.ProbeMismatch: linear v1 gives outputs shaped [N, 3] where clients get [N, 10] ...
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    info = registry.resolve(name, ref)
    runtime = info.tag("runtime") or "onnxruntime"
    if runtime not in ("onnxruntime", "torch", "torch-compile", "torch-sparse"):
        raise ModelFormatError(f"{name} v{info.version} was validated on {runtime}, which this server cannot run")
    if runtime == "torch-sparse" and device != "cuda":
        raise ModelFormatError(
            f"{name} v{info.version} was validated on torch-sparse (2:4 sparse tensor cores); "
            "serve it on a GPU node with --device cuda"
        )
    what = f"{name} v{info.version}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = registry.download(name, info.version, tmp)
        probe = Probe.load(folder)
        onnx_path = folder / ONNX_FILE
        if runtime == "torch-sparse":
            session: Any = _torch_sparse_session(folder, info.tag("task"), onnx_path)
        else:
            if not onnx_path.is_file():
                from pruneops.export import export_registered  # torch, only when a version needs exporting

                onnx_path = export_registered(folder, info.tag("task"), Path(tmp) / "exported.onnx")
            session = _onnx_session(onnx_path, device, f"{name} v{info.version}")
    model_input, model_output = session.get_inputs()[0], session.get_outputs()[0]
    shape = [d if isinstance(d, int) else None for d in model_input.shape]
    onnx_type = getattr(model_input, "type", "tensor(float)")
    if onnx_type not in INPUT_TYPES:
        raise ModelFormatError(f"{what}: input type {onnx_type} is not one this server takes: {', '.join(INPUT_TYPES)}")
    datatype, dtype = INPUT_TYPES[onnx_type]
    served = ServedVersion(name, info.version, alias, session, model_input.name, shape, model_output.name,
                           dict(info.tags), tuple(probe.outputs.shape[1:]), datatype)  # fmt: skip
    inputs = np.ascontiguousarray(probe.inputs, dtype=dtype)
    # Warm the path live traffic takes (one row at a time, as most clients send): a cold first
    # request is slow enough to fail a challenger's latency analysis on its own.
    one_row = _one_row_seconds(served, inputs[:1], max(warmup, 1))
    check_outputs(probe, served.run(inputs), what, expected_shape=output_shape)
    if runtime != "torch-sparse":  # a GPU run waits for the device: always off the loop
        served.inline_rows = inline_rows(one_row)
    return served


def _one_row_seconds(served: ServedVersion, row: np.ndarray, warmup: int, runs: int = 20) -> float:
    """The fastest of up to ``runs`` one-row runs (after ``warmup``): what the model costs on a quiet core.

    The fastest, not the mean: a version is often loaded while other processes start (or a
    pod's neighbours are busy), and a slow first few runs sent a 50 µs model through the
    executor for its whole life, where each thread hop can wait 5 ms for the GIL. A model
    clearly over the budget stops after the warm-up.
    """
    times = [_timed(served, row) for _ in range(warmup)]
    while len(times) < runs and min(times) <= 10 * INLINE_BUDGET_S:
        times.append(_timed(served, row))
    return min(times)


def inline_rows(one_row_s: float, budget_s: float = INLINE_BUDGET_S) -> int:
    """How many rows may run on the event loop, from a warm one-row run time (rows cost at most linearly).

    >>> inline_rows(0.0001), inline_rows(0.002)
    (10, 0)
    """
    return int(budget_s / one_row_s) if one_row_s > 0 else 0


def _timed(served: ServedVersion, batch: np.ndarray) -> float:
    started = time.perf_counter()
    served.run(batch)
    return time.perf_counter() - started


def _onnx_session(onnx_path: Path, device: str, what: str) -> Any:
    import onnxruntime as ort

    wanted = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if wanted not in ort.get_available_providers():
        raise RuntimeUnavailable(
            f"{what}: ONNX Runtime has no {wanted} here (available: {', '.join(ort.get_available_providers())}); "
            "the GPU image installs onnxruntime-gpu"
        )
    providers = [wanted, "CPUExecutionProvider"] if device == "cuda" else [wanted]
    try:
        session = ort.InferenceSession(str(onnx_path), sess_options=_session_options(), providers=providers)
    except Exception as err:  # noqa: BLE001 - ORT raises its own types for corrupt files
        raise ModelFormatError(f"{what}: model.onnx does not load: {err}") from None
    if session.get_providers()[0] != wanted:  # ORT falls back to the CPU silently
        raise RuntimeUnavailable(f"{what}: ONNX Runtime fell back to {session.get_providers()[0]} instead of {wanted}")
    return session


@dataclass(frozen=True)
class _Port:
    """An input or output as ONNX Runtime describes it (``name``, ``shape``)."""

    name: str
    shape: list[int | None]


class TorchSparseSession:
    """A torch-sparse model behind ONNX Runtime's session interface, so the server treats both alike."""

    def __init__(self, session: Any, inputs: list[_Port], outputs: list[_Port]) -> None:
        self.session, self._inputs, self._outputs = session, inputs, outputs

    def get_inputs(self) -> list[_Port]:
        return self._inputs

    def get_outputs(self) -> list[_Port]:
        return self._outputs

    def run(self, _names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        (batch,) = feed.values()
        out = self.session.run(torch.from_numpy(np.ascontiguousarray(batch)))
        self.session.sync()
        return [out.float().cpu().numpy()]


def _torch_sparse_session(folder: Path, task_path: str | None, onnx_path: Path) -> TorchSparseSession:
    """The version's torch model converted exactly as validation converted it (2:4 Linear weights)."""
    from pruneops.modelio import load_model
    from pruneops.runtimes.torch_sparse import TorchSparseRuntime
    from pruneops.tasks import load_task

    if not task_path:
        raise ModelFormatError(f"{folder} has no pruneops.task tag; torch-sparse serving needs its example input")
    runtime = TorchSparseRuntime("cuda")
    runtime.check()  # RuntimeUnavailable without a CUDA GPU of compute capability >= 8.0
    example = load_task(task_path).example_input(1)
    session = runtime.load(load_model(folder), example, folder)
    from pruneops.export import port_names

    # Port names as clients know them from the version's ONNX file, when it has one.
    names = port_names(onnx_path) if onnx_path.is_file() else ("x", "output")
    shape: list[int | None] = [None, *example.shape[1:]]
    return TorchSparseSession(session, [_Port(names[0], shape)], [_Port(names[1], [None])])


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
