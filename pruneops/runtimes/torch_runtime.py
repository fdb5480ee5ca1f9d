"""Torch eager and ``torch.compile`` runtimes (fp32 on CPU, fp16 on CUDA)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneops.runtimes import Runtime, Session


class TorchSession(Session):
    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype, evidence: dict[str, Any]) -> None:
        self.model, self.device, self.dtype, self.evidence = model, device, dtype, evidence

    @torch.no_grad()
    def run(self, batch: torch.Tensor) -> Any:
        x = batch.to(self.device, non_blocking=True)
        if x.is_floating_point():
            x = x.to(self.dtype)
        return self.model(x)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def model_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.model.state_dict().values())


class TorchRuntime(Runtime):
    """Eager PyTorch: fp32 on CPU; fp16 on CUDA (the dense baseline for sparse tensor cores)."""

    name = "torch"
    compile = False

    def check(self) -> None:
        return None

    def dtype(self) -> torch.dtype:
        return torch.float16 if self.target == "cuda" else torch.float32

    def prepare(self, model: nn.Module) -> nn.Module:
        return copy.deepcopy(model).eval().to(device=torch.device(self.target), dtype=self.dtype())

    def load(self, model: nn.Module, example: torch.Tensor, workdir: Path, name: str = "model") -> Session:
        prepared = self.prepare(model)
        evidence: dict[str, Any] = {"runtime": self.name, "dtype": str(self.dtype()), "device": self.target}
        if self.compile:
            prepared = torch.compile(prepared)  # type: ignore[assignment]
            evidence["compiled"] = True
        session = TorchSession(prepared, torch.device(self.target), self.dtype(), evidence)
        session.run(example)  # compile (if asked) and fail here, not inside the measurement
        return session


class TorchCompileRuntime(TorchRuntime):
    """``torch.compile`` (inductor) over the eager runtime."""

    name = "torch-compile"
    compile = True
