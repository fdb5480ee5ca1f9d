"""Every registered version is an MLflow model that plain MLflow loads and runs (issue 14, point 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.models import Model
from torch import nn

from pruneops.mlmodel import MLMODEL_FILE, ONNX_FILE
from pruneops.registry import Registry
from tests.pruneops.test_registration import INPUTS, saved


def test_a_registered_version_runs_under_plain_pyfunc(
    registry: Registry, name: str, tmp_path: Path, plain_mlflow: Any
) -> None:
    plain_mlflow(registry.tracking_uri)
    torch.manual_seed(0)
    model = nn.Linear(4, 3).eval()
    folder = saved(tmp_path / "m", model)
    before = sorted(p.name for p in folder.iterdir())
    info = registry.register(name, folder)
    assert sorted(p.name for p in folder.iterdir()) == before, "the caller's folder is left as it was"

    loaded = mlflow.pyfunc.load_model(f"models:/{name}/{info.version}")
    rows = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    (predicted,) = loaded.predict(rows).values()
    with torch.no_grad():
        expected = model(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-5)

    meta = loaded.metadata
    assert meta.flavors["python_function"]["loader_module"] == "mlflow.onnx"
    assert meta.flavors["onnx"]["providers"] == ["CPUExecutionProvider"]
    spec = meta.signature.inputs.to_dict()[0]["tensor-spec"], meta.signature.outputs.to_dict()[0]["tensor-spec"]
    assert spec == ({"dtype": "float32", "shape": (-1, 4)}, {"dtype": "float32", "shape": (-1, 3)})


def test_the_example_and_pruneops_files_travel_together(registry: Registry, name: str, tmp_path: Path) -> None:
    info = registry.register(name, saved(tmp_path / "m"))
    local = registry.download(name, info.version, tmp_path / "dl")
    names = {p.name for p in local.iterdir()}
    assert {MLMODEL_FILE, ONNX_FILE, "arch.json", "model.safetensors", "probe.safetensors"} <= names
    assert {"input_example.json", "serving_input_example.json", "requirements.txt"} <= names
    example = Model.load(str(local / MLMODEL_FILE)).load_input_example(str(local))
    np.testing.assert_array_equal(example, INPUTS.numpy()[:2])


def test_params_step_metrics_and_logged_model_on_both_stores(registry: Registry, name: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    info = registry.register(
        name,
        saved(tmp_path / "m"),
        params={"prune.method": "wanda", "parent_version": "1", "kfp_run_id": "run-7"},
        step_metrics={"finetune_train_loss": [0.9, 0.5, 0.4]},
    )
    client = MlflowClient(registry.tracking_uri)
    run = client.get_run(info.run_id)
    assert {k: run.data.params[k] for k in ("prune.method", "parent_version", "kfp_run_id")} == {
        "prune.method": "wanda", "parent_version": "1", "kfp_run_id": "run-7"
    }  # fmt: skip
    history = sorted((m.step, m.value) for m in client.get_metric_history(info.run_id, "finetune_train_loss"))
    assert history == [(0, 0.9), (1, 0.5), (2, 0.4)]
    logged = [m for m in client.search_logged_models([run.info.experiment_id]) if m.source_run_id == info.run_id]
    assert len(logged) == 1 and logged[0].model_type == "pruneops" and logged[0].params["prune.method"] == "wanda"
    # The version is that logged model, as MLflow's own log_model(registered_model_name=...) makes it.
    # On a server the source is models:/<id>; a local store is given the location (see Registry._version_source).
    assert client.get_model_version(name, info.version).source in (f"models:/{logged[0].model_id}",
                                                                   logged[0].artifact_location)  # fmt: skip
    assert registry.artifact_location(name, info.version) == logged[0].artifact_location
    assert json.loads(logged[0].tags["mlflow.modelVersions"]) == [{"name": name, "version": info.version}]
    assert {a.path for a in client.list_logged_model_artifacts(logged[0].model_id)} >= {"MLmodel", "model.onnx"}


def test_a_torch_sparse_version_runs_under_pyfunc_with_pruneops_torch_loader(
    registry: Registry, name: str, tmp_path: Path, plain_mlflow: Any
) -> None:
    """What the server runs for a torch-sparse version is torch, so that is the pyfunc too (on a GPU, sparse)."""
    from pruneops.pruning import MagnitudeConfig, make_permanent, prune_

    plain_mlflow(registry.tracking_uri)
    torch.manual_seed(0)
    model = nn.Linear(4, 3).eval()
    prune_(model, MagnitudeConfig(pattern="2:4"))
    make_permanent(model)
    info = registry.register(name, saved(tmp_path / "m", model), tags={"runtime": "torch-sparse"})
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/{info.version}")
    assert loaded.metadata.flavors["python_function"]["loader_module"] == "pruneops.mlflow_torch"
    assert "onnx" in loaded.metadata.flavors  # the ONNX file and flavor stay, for runtimes that take it
    rows = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    ((output, predicted),) = loaded.predict(rows).items()
    with torch.no_grad():
        np.testing.assert_allclose(predicted, model(torch.from_numpy(rows)).numpy(), rtol=1e-4, atol=1e-5)
    import onnx  # the output is named as in the version's ONNX file, as MLflow's ONNX pyfunc names it

    folder = registry.download(name, info.version, tmp_path / "dl")
    assert output == onnx.load(str(folder / ONNX_FILE)).graph.output[0].name
