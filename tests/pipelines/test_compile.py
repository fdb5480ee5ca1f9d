"""The compiled pipeline IR is golden: recompiling gives the committed files byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pruneops.pipelines.prune_and_register import GpuPlacement, compile_pipelines

pytestmark = pytest.mark.unit
COMPILED = Path(__file__).parents[2] / "pipelines" / "compiled"


def test_compiled_ir_is_up_to_date(tmp_path: Path) -> None:
    for path in map(Path, compile_pipelines(str(tmp_path))):
        committed = COMPILED / path.name
        assert committed.is_file(), f"{committed} missing: run `pruneops compile`"
        assert path.read_text() == committed.read_text(), f"{path.name} is stale: run `pruneops compile`"


def _executor(spec: dict, suffix: str = "validate") -> dict:
    return spec["deploymentSpec"]["executors"][f"exec-{suffix}"]


def test_steps_and_condition() -> None:
    spec = next(yaml.safe_load_all((COMPILED / "prune_and_register.yaml").read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert {"baseline", "prune", "finetune", "validate", "register", "condition-1"} <= set(tasks)
    condition = tasks["condition-1"]["triggerPolicy"]["condition"]
    assert condition == "inputs.parameter_values['pipelinechannel--validate-Output'] == true"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"model_name", "version", "recipe", "task", "target", "tracking_uri"}
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"ghcr.io/pruneops/pruneops:0.1.0"}
    assert "accelerator" not in _executor(spec)["container"]["resources"]


def test_gpu_variant_places_only_validate_on_gpu_nodes() -> None:
    docs = list(yaml.safe_load_all((COMPILED / "prune_and_register_gpu.yaml").read_text()))
    spec, platform = docs[0], docs[1]
    accelerator = _executor(spec)["container"]["resources"]["accelerator"]
    placement = GpuPlacement()
    assert accelerator["resourceType"] == placement.accelerator_type and accelerator["resourceCount"] == "1"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {name for name, e in k8s.items() if "nodeSelector" in e or "tolerations" in e} == {"exec-validate"}
    assert k8s["exec-validate"]["nodeSelector"]["labels"] == {placement.node_selector_key: "true"}
    assert k8s["exec-validate"]["tolerations"][0]["key"] == placement.toleration_key
    for name, executor in spec["deploymentSpec"]["executors"].items():
        if name != "exec-validate":
            assert "accelerator" not in executor["container"]["resources"], name


def test_gpu_placement_is_configurable(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "pruneops.cli", "compile", "--output-dir", str(tmp_path),
         "--gpu-accelerator", "nvidia.com/mig-1g.10gb", "--gpu-count", "2",
         "--gpu-node-selector", "pool=h100", "--gpu-toleration", "dedicated"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all((tmp_path / "prune_and_register_gpu.yaml").read_text()))
    accelerator = _executor(docs[0])["container"]["resources"]["accelerator"]
    assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/mig-1g.10gb", "2")
    k8s = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-validate"]
    assert k8s["nodeSelector"]["labels"] == {"pool": "h100"} and k8s["tolerations"][0]["key"] == "dedicated"
    bad = subprocess.run([sys.executable, "-m", "pruneops.cli", "compile", "--output-dir", str(tmp_path),
                          "--gpu-node-selector", "nolabel"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 1 and "must be KEY=VALUE" in bad.stderr


def _tasks(spec: dict) -> dict[str, dict]:
    """Every step's task spec, the conditional set-challenger included."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    tasks |= spec["components"]["comp-condition-1"]["dag"]["tasks"]
    return {name: task for name, task in tasks.items() if not name.startswith("condition-")}


@pytest.mark.parametrize("variant", ["prune_and_register.yaml", "prune_and_register_gpu.yaml"])
def test_every_step_has_its_production_settings(variant: str) -> None:
    """Caching off where a step writes MLflow, resources everywhere, retries and the MLflow
    secret on the steps that talk to MLflow: read from the committed IR a cluster runs."""
    from pruneops.pipelines.cluster import DEFAULT_RESOURCES, MLFLOW_SECRET_KEYS, MLFLOW_STEPS, UNCACHED_STEPS

    docs = list(yaml.safe_load_all((COMPILED / variant).read_text()))
    spec, platform = docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = _tasks(spec)
    assert set(tasks) == set(DEFAULT_RESOURCES)
    for step, task in tasks.items():
        assert task["cachingOptions"].get("enableCache", False) is (step not in UNCACHED_STEPS), step
        executor = task["componentRef"]["name"].replace("comp-", "exec-", 1)
        resources = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
        want = DEFAULT_RESOURCES[step]
        assert (resources["resourceCpuRequest"], resources["resourceCpuLimit"]) == (want.cpu_request, want.cpu_limit)
        assert (resources["resourceMemoryRequest"], resources["resourceMemoryLimit"]) == (
            want.memory_request, want.memory_limit)  # fmt: skip
        if step in MLFLOW_STEPS:
            assert task["retryPolicy"]["maxRetryCount"] == 3 and task["retryPolicy"]["backoffFactor"] == 2.0
            (secret,) = platform[executor]["secretAsEnv"]
            assert secret["secretName"] == "mlflow-credentials" and secret["optional"] is True
            assert {e["envVar"] for e in secret["keyToEnv"]} == set(MLFLOW_SECRET_KEYS)
        else:
            assert "retryPolicy" not in task and "secretAsEnv" not in platform.get(executor, {}), step


def test_resources_and_secret_are_set_at_compile_time(tmp_path: Path) -> None:
    from pruneops.errors import PruneopsError
    from pruneops.pipelines.cluster import ClusterSettings

    (tmp_path / "resources.yaml").write_text("finetune: {memory_limit: 16Gi, cpu_limit: 8}\n")
    compile_pipelines(str(tmp_path), cluster=ClusterSettings.load(tmp_path / "resources.yaml", "team-mlflow"))
    docs = list(yaml.safe_load_all((tmp_path / "prune_and_register.yaml").read_text()))
    resources = _executor(docs[0], "finetune")["container"]["resources"]
    assert (resources["resourceMemoryLimit"], resources["resourceCpuLimit"], resources["resourceCpuRequest"]) == (
        "16Gi", "8", "2")  # fmt: skip
    secrets = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-register"]["secretAsEnv"]
    assert secrets[0]["secretName"] == "team-mlflow"
    (tmp_path / "bad.yaml").write_text("finetuning: {cpu_limit: 8}\n")
    with pytest.raises(PruneopsError, match="'finetuning' must be one of baseline, prune"):
        ClusterSettings.load(tmp_path / "bad.yaml")
