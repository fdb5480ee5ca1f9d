"""Registration as an attacker and a crash would see it: bad weights, lossy saves, tampered files, kills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from torch import nn

from pruneops.errors import IntegrityError, ModelFormatError, NotFoundError
from pruneops.integrity import recorded_digests
from pruneops.modelio import ARCH_FILE, WEIGHTS_FILE, ArchSpec, save_model
from pruneops.probe import CLASSES, PROBE_FILE, record
from pruneops.registry import EXPERIMENT, MODEL_DIR, REFERENCE_DIR, REGISTRATION_KEY, Registry

SPEC = ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 3})
INPUTS = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))


def saved(folder: Path, model: nn.Module | None = None) -> Path:
    model = model if model is not None else nn.Linear(4, 3)
    return save_model(model, folder, SPEC, probe=record(model, INPUTS, CLASSES))


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest) -> Path | None:
    """Where the server keeps artifacts (None for SQLite, whose sources are local paths)."""
    return request.getfixturevalue("mlflow_server_root") / "artifacts" if backend.startswith("http") else None


def artifact_file(registry: Registry, store: Path | None, name: str, version: str, relative: str) -> Path:
    """The stored copy of one artifact: the files a writer of the artifact store can change."""
    source = registry.artifact_location(name, version)
    if store is None:
        return Path(source.removeprefix("file://")) / relative
    return store / source.removeprefix("mlflow-artifacts:/") / relative


@pytest.mark.unit
def test_non_finite_weights_are_refused(registry: Registry, name: str, tmp_path: Path) -> None:
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    folder = save_model(model, tmp_path / "m", SPEC, probe=record(nn.Linear(4, 3), INPUTS, CLASSES))
    with pytest.raises(ModelFormatError, match="holds NaN or infinity"):
        registry.register(name, folder, tags={"gate": "passed"})
    with pytest.raises(NotFoundError):
        registry.versions(name)


def test_a_save_that_loses_something_is_refused(registry: Registry, name: str, tmp_path: Path) -> None:
    folder = saved(tmp_path / "m")
    # The weights no longer give what the model in memory gave: a lossy save.
    other = saved(tmp_path / "other", nn.Linear(4, 3))
    (folder / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(ModelFormatError, match="does not reproduce the outputs"):
        registry.register(name, folder)
    (folder / PROBE_FILE).unlink()
    with pytest.raises(ModelFormatError, match="has no probe"):
        registry.register(name, folder)


def test_digests_are_recorded_and_checked(registry: Registry, name: str, tmp_path: Path) -> None:
    reference = np.zeros((4, 2), np.float32)
    version = registry.register(name, saved(tmp_path / "m"), reference=reference).version
    tags = registry.version(name, version).tags
    stored = registry.download(name, version, tmp_path / "dl", verify=False)
    # Every stored file has a digest: the pruneops files and the MLflow model beside them.
    assert set(recorded_digests(tags, MODEL_DIR)) == {f"model/{p.name}" for p in stored.iterdir()}
    assert {ARCH_FILE, WEIGHTS_FILE, PROBE_FILE, "model.onnx", "MLmodel"} <= {p.name for p in stored.iterdir()}
    assert set(recorded_digests(tags, REFERENCE_DIR)) == {"reference/reference.parquet"}
    assert registry.load_model(name, version).out_features == 3


@pytest.mark.parametrize("tamper", ["changed", "truncated", "deleted", "added"])
def test_tampered_artifacts_are_refused_on_every_load(
    registry: Registry, name: str, tmp_path: Path, store: Path | None, tamper: str
) -> None:
    version = registry.register(name, saved(tmp_path / "m")).version
    stored = artifact_file(registry, store, name, version, WEIGHTS_FILE)
    data = stored.read_bytes()
    if tamper == "changed":
        stored.write_bytes(data[:-4] + b"\x00\x00\x80\x7f")  # the last weight becomes +inf
    elif tamper == "truncated":
        stored.write_bytes(data[: len(data) // 2])
    elif tamper == "deleted":
        stored.unlink()
    else:
        (stored.parent / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(IntegrityError):
        registry.load_model(name, version)
    with pytest.raises(IntegrityError):
        registry.download(name, version, tmp_path / "dl")


@pytest.mark.unit
def test_a_version_without_digests_is_refused_unless_asked(registry: Registry, name: str, tmp_path: Path) -> None:
    """What a registry writer gets by creating a version with MLflow's own client: no digests."""
    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT) or client.get_experiment(
        client.create_experiment(EXPERIMENT)
    )
    run = client.create_run(experiment.experiment_id)
    client.log_artifacts(run.info.run_id, str(saved(tmp_path / "m")), MODEL_DIR)
    client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/{MODEL_DIR}", run.info.run_id).version
    with pytest.raises(IntegrityError, match="no file digests are recorded"):
        registry.load_model(name, version)
    folder = registry.download(name, version, tmp_path / "dl", verify=False)
    assert (folder / WEIGHTS_FILE).is_file()


CRASH = r"""
import os, sys
from mlflow import MlflowClient
point, name, folder, key = sys.argv[1:5]
real = getattr(MlflowClient, point)

def crash(self, *args, **kwargs):
    result = real(self, *args, **kwargs)
    os._exit(9)  # killed right after this write, as SIGKILL would

setattr(MlflowClient, point, crash)
from pruneops.registry import Registry
Registry().register(name, folder, tags={"gate": "passed"}, key=key or None)
os._exit(0)
"""
POINTS = ["create_run", "create_logged_model", "log_model_artifacts", "create_registered_model",
          "create_model_version", "set_logged_model_tags", "set_terminated"]  # fmt: skip


def runs_of(registry: Registry, name: str) -> list:
    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], f"tags.`pruneops.registration.model` = '{name}'")


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_killed_at_each_write_then_retried_with_its_key(
    registry: Registry, name: str, tmp_path: Path, backend: str, point: str
) -> None:
    folder = saved(tmp_path / "m")
    env = {**os.environ, "MLFLOW_TRACKING_URI": backend}
    crashed = subprocess.run([sys.executable, "-c", CRASH, point, name, str(folder), "run-42"], env=env, timeout=180)
    assert crashed.returncode == 9, "the registration was not killed where asked"
    info = registry.register(name, folder, tags={"gate": "passed"}, key="run-42")
    versions = registry.versions(name)
    assert [v.version for v in versions] == [info.version], "a retry registered a second version"
    runs = runs_of(registry, name)
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    ours = [r for r in runs if r.data.tags.get(REGISTRATION_KEY) == "run-42"]
    assert {r.info.run_id for r in ours if r.info.status == "FINISHED"} == {info.run_id}
    again = registry.register(name, folder, tags={"gate": "passed"}, key="run-42")
    assert again.version == info.version and len(registry.versions(name)) == 1
    # The version's logged model names it; one a killed attempt left half made is marked FAILED.
    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    logged = [m for m in client.search_logged_models([experiment_id]) if m.name == name]  # the server is shared
    linked = [m for m in logged if m.tags.get("mlflow.modelVersions")]
    assert [json.loads(m.tags["mlflow.modelVersions"]) for m in linked] == [[{"name": name, "version": info.version}]]
    assert {str(m.status) for m in logged if m not in linked} <= {"FAILED"}


@pytest.mark.slow
@pytest.mark.parametrize("point", ["log_model_artifacts", "create_model_version"])
def test_a_later_registration_cleans_up_after_a_killed_one(
    registry: Registry, name: str, tmp_path: Path, backend: str, point: str
) -> None:
    folder = saved(tmp_path / "m")
    registry.register(name, folder)  # the model exists, so the crash is on a later version
    env = {**os.environ, "MLFLOW_TRACKING_URI": backend}
    crashed = subprocess.run([sys.executable, "-c", CRASH, point, name, str(folder), ""], env=env, timeout=180)
    assert crashed.returncode == 9
    assert any(r.info.status == "RUNNING" for r in runs_of(registry, name))
    registry.register(name, saved(tmp_path / "n"))
    statuses = {r.info.status for r in runs_of(registry, name)}
    assert "RUNNING" not in statuses
    # A version that was created before the kill is kept (it is complete), and its run is finished.
    for version in registry.versions(name):
        run = MlflowClient(backend, backend).get_run(version.run_id)
        assert run.info.status == "FINISHED"
