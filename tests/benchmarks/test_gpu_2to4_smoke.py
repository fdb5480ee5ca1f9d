"""The GPU benchmark script runs end to end (tiny shapes, CPU, dense only) and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.unit
def test_gpu_benchmark_smoke(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu_2to4.py"), "--smoke", "--out", str(tmp_path),
         "--iterations", "3", "--warmup", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "gpu_2to4_smoke.json").read_text())
    assert data["device"].startswith("cpu (smoke run")
    assert [(r["batch"], r["seq"]) for r in data["encoder"]] == [(1, 16), (4, 32)]
    assert all("error" not in r and r["dense"]["iterations"] == 3 for r in data["encoder"])
    assert [r["gemm"] for r in data["gemm"]] == ["64->128", "128->64"]


@pytest.mark.unit
def test_gpu_benchmark_refuses_without_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu_2to4.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1 and "needs a CUDA GPU" in result.stderr
