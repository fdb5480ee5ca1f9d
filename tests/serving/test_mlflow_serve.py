"""Plain MLflow runs what pruneops registers: ``mlflow.pyfunc`` in process and ``mlflow models serve`` as a process.

Both must answer what ``pruneops serve`` answers for the same version (issue 14, point 3).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
import torch

from pruneops.registry import Registry
from tests.conftest import free_port, stop_process, wait_http
from tests.serving.conftest import Stack
from tests.serving.test_serving import DIGITS, infer_body

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(stack: Stack, monkeypatch: pytest.MonkeyPatch, plain_mlflow: Any) -> Registry:
    monkeypatch.setenv("PRUNEOPS_HOME", str(stack.home))
    registry = Registry()
    plain_mlflow(registry.tracking_uri)
    return registry


def served_logits(stack: Stack) -> np.ndarray:
    reply = httpx.post(f"{stack.server}/v2/models/digits/infer", json=infer_body(), timeout=10)
    reply.raise_for_status()
    output = reply.json()["outputs"][0]
    return np.asarray(output["data"], np.float32).reshape(output["shape"])


@pytest.mark.parametrize("version", ["baseline", "small"])
def test_pyfunc_predicts_what_torch_and_the_server_give(stack: Stack, registry: Registry, version: str) -> None:
    number = stack.versions[version]
    (predicted,) = mlflow.pyfunc.load_model(f"models:/digits/{number}").predict(DIGITS).values()
    with torch.no_grad():
        expected = registry.load_model("digits", number)(torch.from_numpy(DIGITS)).numpy()
    np.testing.assert_allclose(predicted, expected, atol=1e-4)
    # MLflow wrote registered_model_meta into the stored folder on that load; pruneops still loads it.
    if version == "baseline":  # the version the pruneops server is serving
        np.testing.assert_allclose(predicted, served_logits(stack), atol=1e-4)


def test_mlflow_models_serve_answers_like_pruneops_serve(stack: Stack, registry: Registry) -> None:
    port = free_port()
    # As with an activated virtual environment: MLflow starts ``uvicorn`` from PATH.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri, "PATH": path}
    number = stack.versions["baseline"]
    log = (stack.home / "mlflow-serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/digits/{number}",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=120, process=process)
        reply = httpx.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": DIGITS.tolist()}, timeout=30)
        assert reply.status_code == 200, reply.text
        (predictions,) = reply.json()["predictions"].values()
        np.testing.assert_allclose(np.asarray(predictions, np.float32), served_logits(stack), atol=1e-4)
    finally:
        stop_process(process)
        log.close()
