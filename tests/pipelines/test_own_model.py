"""A team's own model, as a new user brings it: ``pruneops register`` with a data file, then
``pruneops run`` without ``--task``, then the pruned version under plain ``mlflow.pyfunc``.

The model is a LayerNorm residual MLP pruneops never saw, on scikit-learn's breast-cancer set;
structured pruning of it used to register a version that could not be loaded again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch

from pruneops.modelio import ArchSpec, load_model, save_model
from pruneops.probe import CLASSES, record
from pruneops.registry import CHALLENGER, CHAMPION, REGISTRATION_KEY, Registry
from tests.foreign import cancer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).parents[2]
RECIPE = {
    "prune": {"method": "magnitude", "pattern": "channels", "sparsity": 0.5, "exclude": ["head"]},
    "finetune": {"epochs": 3, "lr": 1.0e-3, "distill": {"temperature": 2.0, "alpha": 0.5}},
    "validate": {"target": "cpu", "runtimes": ["onnxruntime"], "batch_sizes": [1, 32]},
    "gates": {"max_accuracy_drop": 0.05},
}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pruneops.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


@pytest.fixture
def env(isolated_state: Path, monkeypatch: pytest.MonkeyPatch, plain_mlflow: Any) -> dict[str, str]:
    plain_mlflow(Registry().tracking_uri)  # the test's own mlflow calls, as a team's code makes them
    # The team's module is trusted by the operator; pipeline steps import it from the checkout.
    monkeypatch.setenv("PRUNEOPS_TRUSTED_MODULES", "tests.foreign")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return dict(os.environ)


def test_register_then_run_then_plain_mlflow(env: dict[str, str], tmp_path: Path) -> None:
    model, data = cancer.train(tmp_path)
    spec = ArchSpec(cancer.FACTORY, cancer.ARCH)
    folder = save_model(model, tmp_path / "trained", spec, probe=record(model, torch.zeros(4, 30), CLASSES))

    registered = cli("register", "cancer", str(folder), "--data", str(data), "--metric", "accuracy", env=env)
    assert registered.returncode == 0, registered.stderr[-3000:]
    registry = Registry()
    source = registry.version("cancer", "1")
    assert source.aliases == (CHAMPION,) and source.tag("task", "").startswith("data:runs:/")
    assert float(source.tag("accuracy") or 0) > 0.9

    (tmp_path / "recipe.yaml").write_text(json.dumps(RECIPE))
    ran = cli("run", "--model", "cancer", "--version", "1", "--recipe", str(tmp_path / "recipe.yaml"), env=env)
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    pruned = registry.version("cancer", "2")
    assert pruned.tag("gate") == "passed" and pruned.tag("task") == source.tag("task")
    assert registry.aliases("cancer") == {CHAMPION: "1", CHALLENGER: "2"}

    stored = load_model(registry.download("cancer", "2", tmp_path / "v2"))
    assert stored.norm.normalized_shape == (32,)  # the LayerNorm regression: the width survived
    assert_lineage_in_mlflow(registry, pruned.run_id)
    with np.load(data) as arrays:
        rows = arrays["inputs"][:16]
    (predicted,) = mlflow.pyfunc.load_model("models:/cancer@challenger").predict(rows).values()
    with torch.no_grad():
        np.testing.assert_allclose(predicted, stored(torch.from_numpy(rows)).numpy(), atol=1e-4)


def assert_lineage_in_mlflow(registry: Registry, run_id: str) -> None:
    """What the MLflow UI shows: the recipe as params, per-epoch metrics, the logged model."""
    from mlflow import MlflowClient

    client = MlflowClient(registry.tracking_uri)
    run = client.get_run(run_id)
    params = run.data.params
    assert params["prune.pattern"] == "channels" and params["finetune.epochs"] == "3"
    assert params["parent_version"] == "1" and params["source_model"] == "cancer"
    # The KFP job id, the same that keys the registration for retries.
    assert params["kfp_run_id"] not in ("", "local")
    assert run.data.tags[REGISTRATION_KEY] == f"kfp:{params['kfp_run_id']}:register"
    losses = client.get_metric_history(run_id, "finetune_train_loss")
    assert sorted(m.step for m in losses) == list(range(len(losses))) and len(losses) >= 1
    logged = client.search_logged_models([run.info.experiment_id])
    assert [m.source_run_id for m in logged if m.name == "cancer"].count(run_id) == 1


def test_a_model_that_does_not_fit_the_data_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    model, _ = cancer.train(tmp_path, epochs=1)
    folder = save_model(model, tmp_path / "trained", ArchSpec(cancer.FACTORY, cancer.ARCH),
                        probe=record(model, torch.zeros(4, 30), CLASSES))  # fmt: skip
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, inputs=np.zeros((20, 12), np.float32), labels=np.zeros(20, np.int64))
    out = cli("register", "cancer", str(folder), "--data", str(wrong), "--metric", "accuracy", env=env)
    assert out.returncode == 1 and "does not run on the task's inputs (shape [2, 12]" in out.stderr
    assert not Registry().has_model("cancer")


def log_team_model(tmp_path: Path) -> tuple[Path, str]:
    """As a team does it: mlflow.pytorch.log_model (pt2, MLflow 3's default) into the registry."""
    model, data = cancer.train(tmp_path)
    with np.load(data) as arrays:
        example = arrays["inputs"][:8]
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("team", artifact_location=(tmp_path / "team").as_uri())
    )
    with mlflow.start_run():
        mlflow.pytorch.log_model(model, name="model", input_example=example, serialization_format="pt2",
                                 registered_model_name="team")  # fmt: skip
    return data, f"data:{data}#metric=accuracy"


def test_a_pt2_model_logged_by_mlflow_is_pruned_without_code(env: dict[str, str], tmp_path: Path) -> None:
    data, task = log_team_model(tmp_path)
    recipe = dict(RECIPE, prune={"method": "wanda", "pattern": "2:4", "sparsity": 0.5, "exclude": ["embed", "head"]})
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    # PRUNEOPS_TRUSTED_MODULES is not needed: nothing of the team's code is imported.
    env = {k: v for k, v in env.items() if k != "PRUNEOPS_TRUSTED_MODULES"}
    ran = cli("run", "--model", "team", "--version", "1", "--recipe", str(tmp_path / "recipe.yaml"), "--task", task,
              env=env)  # fmt: skip
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    registry = Registry()
    pruned = registry.version("team", "2")
    assert pruned.tag("pattern") == "2:4" and pruned.tag("gate") == "passed", pruned.tag("gate_reasons")
    with np.load(data) as arrays:
        rows = arrays["inputs"][:16]
    (predicted,) = mlflow.pyfunc.load_model("models:/team/2").predict(rows).values()
    stored = load_model(registry.download("team", "2", tmp_path / "v2"))
    assert float((stored.get_submodule("blocks.0.up").weight == 0).float().mean()) == 0.5
    with torch.no_grad():
        np.testing.assert_allclose(predicted, stored(torch.from_numpy(rows)).numpy(), atol=1e-4)


def test_structured_pruning_of_a_pt2_model_is_refused_before_any_step(env: dict[str, str], tmp_path: Path) -> None:
    _data, task = log_team_model(tmp_path)
    (tmp_path / "recipe.yaml").write_text(json.dumps(RECIPE))  # channels
    ran = cli("run", "--model", "team", "--version", "1", "--recipe", str(tmp_path / "recipe.yaml"), "--task", task,
              env=env)  # fmt: skip
    assert ran.returncode == 1
    assert "team v1: structured pruning (channels, heads, blocks) cannot apply to an exported program" in ran.stderr
    assert not (Path(env["PRUNEOPS_HOME"]) / "kfp").exists(), "no step ran"
    assert [v.version for v in Registry().versions("team")] == ["1"]


def test_register_takes_an_mlflow_uri(env: dict[str, str], tmp_path: Path) -> None:
    data, _task = log_team_model(tmp_path)
    out = cli("register", "team-served", "models:/team/1", "--data", str(data), "--metric", "f1", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    registry = Registry()
    info = registry.version("team-served", "1")
    task = info.tag("task") or ""
    assert info.aliases == (CHAMPION,) and task.startswith("data:runs:/") and "#metric=f1&sha256=" in task
    files = {p.name for p in registry.download("team-served", "1", tmp_path / "dl").iterdir()}
    assert {"program.pt2", "arch.json", "model.safetensors", "MLmodel", "model.onnx"} <= files
