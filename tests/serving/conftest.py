"""A real registry with several digits versions, the model server and the sidecar as processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_http

SECRET = "serving-secret"


@dataclass
class Stack:
    home: Path
    server: str
    sidecar: str
    env: dict[str, str]
    versions: dict[str, str]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pruneops.cli", *args], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip


def _register_versions(env: dict[str, str]) -> dict[str, str]:
    """v1 baseline (champion), v2 a 50%-channels model, v3 a corrupt ONNX file."""
    script = r"""
import copy, tempfile, pathlib, torch
from pruneops.demo import init_demo
from pruneops.registry import Registry
from pruneops.tasks.digits import task
from pruneops.pruning import MagnitudeConfig, prune_
from pruneops.modelio import save_model
from pruneops.export import export_onnx
v1 = init_demo("digits")
dense = Registry().load_model("digits", "1")
small = copy.deepcopy(dense)
prune_(small, MagnitudeConfig(pattern="channels", sparsity=0.5), example_inputs=task.example_input(1))
tags = {"source": "pipeline", "parent_version": "1", "task": "pruneops.tasks.digits:task", "gate": "passed",
        "method": "magnitude", "pattern": "channels", "sparsity": "0.75", "runtime": "onnxruntime"}
with tempfile.TemporaryDirectory() as tmp:
    folder = save_model(small, pathlib.Path(tmp) / "m", task.arch)
    export_onnx(small, task.example_input(2), folder / "model.onnx")
    v2 = Registry().register("digits", folder, tags=tags).version
    (folder / "model.onnx").write_bytes(b"this is not an onnx file")
    v3 = Registry().register("digits", folder, tags=tags).version
print(v1.version, v2, v3)
"""
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    v1, v2, v3 = out.stdout.split()[-3:]
    return {"baseline": v1, "small": v2, "corrupt": v3}


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="pruneops-serving-"))
    env = {**os.environ, "PRUNEOPS_HOME": str(home), "PRUNEOPS_WEBHOOK_SECRET": SECRET,
           "MLFLOW_DISABLE_TELEMETRY": "true"}  # fmt: skip
    env.pop("MLFLOW_TRACKING_URI", None)
    versions = _register_versions(env)
    server_port, sidecar_port = free_port(), free_port()
    server = _start(["serve", "--model", "digits", "--port", str(server_port), "--poll-interval", "0.5", "--shadow"],
                    env, home / "server.log")  # fmt: skip
    sidecar = _start(["sidecar", "--upstream", f"http://127.0.0.1:{server_port}", "--port", str(sidecar_port),
                      "--sample-every", "1"], env, home / "sidecar.log")  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{server_port}/v2/health/ready", timeout=120, process=server)
        wait_http(f"http://127.0.0.1:{sidecar_port}/metrics", timeout=60, process=sidecar)
        yield Stack(home, f"http://127.0.0.1:{server_port}", f"http://127.0.0.1:{sidecar_port}", env, versions)
    finally:
        for process in (sidecar, server):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(home, ignore_errors=True)
