"""Runtimes: where a candidate is measured. Each one loads a model into a :class:`Session`.

``torch`` (eager), ``torch-compile``, ``torch-sparse`` (2:4 weights on NVIDIA sparse tensor
cores) and ``onnxruntime`` (CPU, or CUDA with ``onnxruntime-gpu``). A runtime that cannot run
here raises :class:`RuntimeUnavailable` with the reason; nothing falls back silently to
measuring something else. The torch runtimes import only torch.

>>> get_runtime("torch", "cpu").name
'torch'
>>> get_runtime("tensorrt", "cpu")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pruneops.errors.RuntimeUnavailable: unknown runtime 'tensorrt'; use one of: ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneops.errors import RuntimeUnavailable


class Session(ABC):
    """A model loaded into a runtime, ready to run batches."""

    #: What ran, for the evidence: provider, dtype, device, sparse layers, ...
    evidence: dict[str, Any]

    @abstractmethod
    def run(self, batch: torch.Tensor) -> Any:
        """Run one batch (a CPU tensor) and return the output."""

    def sync(self) -> None:  # noqa: B027 - optional hook, deliberately empty by default
        """Wait for queued device work (CUDA); no-op on CPU."""

    def model_bytes(self) -> int | None:
        """Bytes of weights as this runtime holds them, if known."""
        return None


class Runtime(ABC):
    """A way to execute a model on a target device."""

    name: str

    def __init__(self, target: str) -> None:
        self.target = target

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`RuntimeUnavailable` when this runtime cannot run on this machine."""

    @abstractmethod
    def load(self, model: nn.Module, example: torch.Tensor, workdir: Path, name: str = "model") -> Session:
        """Prepare ``model`` (a copy; the argument is not changed) for running.

        ``workdir/name.*`` is where the runtime may write files (an ONNX export).
        """


def device_name(target: str) -> str:
    """A readable name of the device a target runs on ("NVIDIA H100 80GB HBM3", a CPU model).

    >>> isinstance(device_name("cpu"), str) and device_name("cpu") != ""
    True
    """
    if target == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def get_runtime(name: str, target: str) -> Runtime:
    """The runtime called ``name`` for ``target`` (``cpu`` or ``cuda``), checked to be usable here.

    >>> get_runtime("onnxruntime", "cpu").name
    'onnxruntime'
    >>> get_runtime("tensorrt", "cpu")
    Traceback (most recent call last):
    ...
    pruneops.errors.RuntimeUnavailable: unknown runtime 'tensorrt'...
    """
    from pruneops.runtimes.onnx_runtime import OnnxRuntime
    from pruneops.runtimes.torch_runtime import TorchCompileRuntime, TorchRuntime
    from pruneops.runtimes.torch_sparse import TorchSparseRuntime

    known: dict[str, type[Runtime]] = {
        "onnxruntime": OnnxRuntime,
        "torch": TorchRuntime,
        "torch-compile": TorchCompileRuntime,
        "torch-sparse": TorchSparseRuntime,
    }
    if name not in known:
        raise RuntimeUnavailable(f"unknown runtime {name!r}; use one of: {', '.join(sorted(known))}")
    if target not in ("cpu", "cuda"):
        raise RuntimeUnavailable(f"unknown target {target!r}; use cpu or cuda")
    if target == "cuda" and not torch.cuda.is_available():
        raise RuntimeUnavailable(f"runtime {name} on cuda: no CUDA device on this machine")
    runtime = known[name](target)
    runtime.check()
    return runtime
