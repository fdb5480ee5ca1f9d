"""The loader serves each version with its recorded runtime on the server's device, or refuses clearly."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from kserve import InferInput, InferRequest
from prometheus_client import CollectorRegistry

from pruneops.errors import ModelFormatError, RuntimeUnavailable
from pruneops.modelio import save_model
from pruneops.monitoring.metrics import ServerMetrics
from pruneops.registry import Registry
from pruneops.runtimes.torch_runtime import TorchRuntime
from pruneops.serving.loader import ServedVersion, TorchSparseSession, _Port, inline_rows, load_version
from pruneops.serving.server import RegistryModel
from pruneops.tasks.digits import build, task


def register(runtime: str) -> tuple[Registry, str]:
    registry = Registry()
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = build(channels=(4, 4, 4), hidden=8)
        folder = save_model(model, Path(tmp) / "m", task.arch, probe=task.probe(model))
        tags = {"gate": "passed", "runtime": runtime, "task": "pruneops.tasks.digits:task"}
        return registry, registry.register("tiny", folder, tags=tags).version


def test_cpu_onnxruntime_serves() -> None:
    registry, version = register("onnxruntime")
    served = load_version(registry, "tiny", version, alias="champion")
    assert served.run(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_onnxruntime_without_the_cuda_provider_is_refused() -> None:
    registry, version = register("onnxruntime")
    with pytest.raises(RuntimeUnavailable, match="no CUDAExecutionProvider"):
        load_version(registry, "tiny", version, alias="champion", device="cuda")


def test_torch_sparse_version_is_refused_on_a_cpu_server() -> None:
    registry, version = register("torch-sparse")
    with pytest.raises(ModelFormatError, match="--device cuda"):
        load_version(registry, "tiny", version, alias="champion", device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_torch_sparse_without_a_gpu_is_refused() -> None:
    registry, version = register("torch-sparse")
    with pytest.raises(RuntimeUnavailable, match="needs a CUDA GPU"):
        load_version(registry, "tiny", version, alias="champion", device="cuda")


def test_unknown_device_is_an_error() -> None:
    registry, version = register("onnxruntime")
    with pytest.raises(ValueError, match="device must be one of"):
        load_version(registry, "tiny", version, alias="champion", device="tpu")


def test_torch_session_adapter_answers_like_onnxruntime(tmp_path: Path) -> None:
    """The adapter the torch-sparse path uses, over a CPU torch session: same outputs as the model."""
    torch.manual_seed(0)
    model = build(channels=(4, 4, 4), hidden=8).eval()
    example = task.example_input(3)
    session = TorchRuntime("cpu").load(model, example, tmp_path)
    adapter = TorchSparseSession(session, [_Port("x", [None, 1, 8, 8])], [_Port("output", [None])])
    (out,) = adapter.run(["output"], {"x": example.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, model(example).numpy(), rtol=1e-5, atol=1e-6)
    assert adapter.get_inputs()[0].name == "x" and adapter.get_outputs()[0].name == "output"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_sparse_serves_on_a_gpu() -> None:
    """Owed on a GPU machine: a 2:4 version served with sparse kernels, outputs close to fp32."""
    from pruneops.pruning import MagnitudeConfig, make_permanent, prune_

    registry = Registry()
    torch.manual_seed(0)
    model = build(channels=(64, 64, 128), hidden=128).eval()
    linear_only = lambda module, _name: isinstance(module, torch.nn.Linear)  # noqa: E731 - 2:4 needs Linear
    prune_(model, MagnitudeConfig(pattern="2:4"), linear_only, example_inputs=task.example_input(1))
    make_permanent(model)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_model(model, Path(tmp) / "m", task.arch, probe=task.probe(model))
        tags = {"gate": "passed", "runtime": "torch-sparse", "task": "pruneops.tasks.digits:task"}
        version = registry.register("sparse", folder, tags=tags).version
    served = load_version(registry, "sparse", version, alias="champion", device="cuda")
    batch = task.example_input(4)
    with torch.no_grad():
        expected = model(batch).numpy()
    np.testing.assert_allclose(served.run(batch.numpy()), expected, rtol=5e-2, atol=5e-2)


def test_a_small_model_runs_on_the_event_loop_and_a_slow_one_off_it() -> None:
    # The thread hop costs more than the tiny model's inference: batches within the budget
    # run inline. A model slower than the budget never blocks the loop.
    registry, version = register("onnxruntime")
    served = load_version(registry, "tiny", version, alias="champion")
    assert served.inline_rows >= 1
    assert inline_rows(0.01) == 0

    class Slow:
        def run(self, _names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            time.sleep(0.3)
            return [np.zeros((len(feed["x"]), 10), np.float32)]

    model = RegistryModel("tiny", registry, ServerMetrics(CollectorRegistry()))
    model.current = ServedVersion("tiny", version, "champion", Slow(), "x", [None, 1, 8, 8], "output",
                                  output_shape=(10,), inline_rows=0)  # fmt: skip
    request = InferRequest("tiny", [InferInput("x", [1, 1, 8, 8], "FP32", data=[0.5] * 64)])

    async def predict_while_ticking() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task_ = asyncio.ensure_future(ticker())
        await model.predict(request)
        task_.cancel()
        return ticks

    assert asyncio.run(predict_while_ticking()) >= 10  # the loop kept running during the 0.3 s inference
