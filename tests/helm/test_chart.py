"""The Helm chart, tested short of a cluster: rendered by Helm's Go SDK, linted, schema-checked,
validated against the Kubernetes schemas, and kept in step with monitoring/ and the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helm.conftest import CHART, ROOT, ci_values, render
from tests.helm.kserve_schema import KINDS as KSERVE_KINDS
from tests.helm.kserve_schema import check as check_kserve

KUBERNETES_VERSION = "1.30.0"
# prometheus-operator's kinds are CRDs, not in the Kubernetes schemas; checked below by hand.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def pods(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in objects if o["kind"] == "Deployment"]


def test_lint_is_clean_with_every_ci_values_file() -> None:
    import helm_python

    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        report = helm_python.lint(str(CHART), ci_values(path), strict=True, kube_version=f"v{KUBERNETES_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, f"{path.name}: {problems}"


def test_every_object_is_valid_kubernetes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = rendered
    assert objects
    for obj in objects:
        if obj["kind"] in OPERATOR_KINDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["spec"], obj["metadata"]["name"]
            continue
        if obj["kind"] in KSERVE_KINDS:
            problems = check_kserve(obj, KSERVE_KINDS[obj["kind"]])
            assert not problems, f"{name}: {obj['kind']} {obj['metadata']['name']}: {problems}"
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name}: {obj['kind']} {obj['metadata']['name']}: {err.message} at {list(err.path)}")


def test_kubernetes_validation_can_fail() -> None:
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_containers_are_locked_down(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = rendered
    for pod in pods(objects):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"] and container["resources"]["limits"], container["name"]
            assert "readinessProbe" in container and "livenessProbe" in container, container["name"]


def test_secrets_are_referenced_never_inlined(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    assert not [o for o in objects if o["kind"] == "Secret"]
    for pod in pods(objects):
        for container in pod["containers"]:
            for env in container.get("env", []):
                if any(word in env["name"] for word in ("SECRET", "TOKEN", "BACKEND_STORE")):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env["name"]


def test_gpu_values_schedule_the_server_on_gpu_nodes() -> None:
    objects = render(ci_values(CHART / "ci" / "gpu-values.yaml"))
    (pod,) = [p for p in pods(objects) if p["containers"][0]["name"] == "server"]
    server = pod["containers"][0]
    assert server["image"].endswith("-gpu") and server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--device=cuda" in server["args"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    cpu = render(ci_values(CHART / "ci" / "default-values.yaml"))
    (cpu_pod,) = [p for p in pods(cpu) if p["containers"][0]["name"] == "server"]
    assert "nodeSelector" not in cpu_pod and "nvidia.com/gpu" not in cpu_pod["containers"][0]["resources"]["limits"]
    assert "--device=cpu" in cpu_pod["containers"][0]["args"]


def test_trigger_restarts_when_its_config_changes() -> None:
    values = ci_values(CHART / "ci" / "default-values.yaml")

    def checksum(objects: list[dict[str, Any]]) -> str:
        (trigger,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-trigger")]
        return str(trigger["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    before = checksum(render(values))
    assert checksum(render(values)) == before
    assert checksum(render(values | {"trigger": {"models": {"digits": "other.yaml"}}})) != before


def test_trigger_config_gives_a_model_its_own_task(tmp_path: Path) -> None:
    """The rendered trigger.yaml and recipes load in the trigger itself, per-model task included."""
    from pruneops.pipelines.trigger import TriggerConfig

    values = ci_values(CHART / "ci" / "default-values.yaml")
    models = {"digits": "channels-50-cpu.yaml", "encoder": {"recipe": "channels-50-cpu.yaml", "task": "my.tasks:enc"}}
    objects = render(values | {"trigger": {"models": models}})
    (config,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-trigger")]
    for name, text in config["data"].items():
        (tmp_path / name).write_text(text)
    loaded = TriggerConfig.load(tmp_path / "trigger.yaml")
    assert loaded.task_for("encoder") == "my.tasks:enc" and loaded.task_for("digits") == "pruneops.tasks.digits:task"
    assert loaded.models["encoder"].prune.pattern == "channels"


def test_schema_refuses_bad_values() -> None:
    from helm_python import HelmError

    for bad in ({"serving": {"canary": 2}}, {"controller": {"prometheusUrl": "prometheus:9090"}},
                {"serving": {"server": {"port": 0}}}, {"unknown": 1}):  # fmt: skip
        with pytest.raises(HelmError):
            render(ci_values(CHART / "ci" / "default-values.yaml") | bad)
    with pytest.raises(HelmError, match=r"mlflow\.trackingUri"):
        render({})


def test_rules_and_dashboards_are_byte_identical_to_monitoring() -> None:
    assert (CHART / "files" / "rules.yaml").read_bytes() == (ROOT / "monitoring/prometheus/rules.yaml").read_bytes()
    ours = {p.name: p.read_bytes() for p in (ROOT / "monitoring/grafana").glob("*.json")}
    chart = {p.name: p.read_bytes() for p in (CHART / "files/dashboards").glob("*.json")}
    assert ours == chart and ours


def test_rendered_rule_and_dashboards_carry_the_sources() -> None:
    objects = render(ci_values(CHART / "ci" / "full-values.yaml"))
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load((ROOT / "monitoring/prometheus/rules.yaml").read_text())["groups"]
    boards = {
        o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]
    }
    assert set(boards) == {"pruneops-dashboard-serving", "pruneops-dashboard-pruning"}
    for board in boards.values():
        assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
        (content,) = board["data"].values()
        name = board["metadata"]["name"].removeprefix("pruneops-dashboard-")
        assert content == (ROOT / "monitoring/grafana" / f"{name}.json").read_text().rstrip("\n")


def test_pipeline_images_and_gpu_placement_match_the_chart() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"
    compiled = {name: list(yaml.safe_load_all((ROOT / "pipelines/compiled" / name).read_text()))
                for name in ("prune_and_register.yaml", "prune_and_register_gpu.yaml")}  # fmt: skip
    cpu_images = {
        e["container"]["image"] for e in compiled["prune_and_register.yaml"][0]["deploymentSpec"]["executors"].values()
    }
    assert cpu_images == {image}
    gpu_executors = compiled["prune_and_register_gpu.yaml"][0]["deploymentSpec"]["executors"]
    assert gpu_executors["exec-validate"]["container"]["image"] == f"{image}-gpu"
    assert (
        gpu_executors["exec-validate"]["container"]["resources"]["accelerator"]["resourceType"]
        == values["serving"]["gpu"]["resourceName"]
    )
    platform = compiled["prune_and_register_gpu.yaml"][1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-validate"
    ]
    assert platform["nodeSelector"]["labels"] == values["serving"]["gpu"]["nodeSelector"]
    assert platform["tolerations"] == values["serving"]["gpu"]["tolerations"]


def test_chart_version_follows_the_package() -> None:
    import pruneops

    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == pruneops.__version__


def test_trusted_modules_reach_every_container_and_servers_listen_on_the_pod() -> None:
    objects = render({**ci_values(CHART / "ci" / "full-values.yaml"), "trustedModules": ["acme.models", "acme.tasks"]})
    for pod in pods(objects):
        for container in pod["containers"]:
            if container["name"] == "mlflow":
                continue
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env["PRUNEOPS_TRUSTED_MODULES"] == "acme.models,acme.tasks", container["name"]
            assert "--host=0.0.0.0" in container["args"], container["name"]
    default = render(ci_values(CHART / "ci" / "default-values.yaml"))
    for pod in pods(default):
        for container in pod["containers"]:
            assert "PRUNEOPS_TRUSTED_MODULES" not in {e["name"] for e in container.get("env", [])}


def test_trusted_modules_must_be_module_names() -> None:
    with pytest.raises(Exception, match="trustedModules"):
        render({**ci_values(CHART / "ci" / "default-values.yaml"), "trustedModules": ["acme; rm -rf /"]})


def test_mlflow_gets_the_webhook_settings_and_its_encryption_key_from_a_secret() -> None:
    """Several MLflow workers must share one key, or webhook deliveries fail with InvalidToken."""
    objects = render(ci_values(CHART / "ci" / "full-values.yaml"))
    (mlflow,) = [c for pod in pods(objects) for c in pod["containers"] if c["name"] == "mlflow"]
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-webhook-key", "key": "key"
    }  # fmt: skip
    assert "value" not in env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"], "never inlined"
    assert env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"]["value"] == "http,https"
    assert env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"]["value"] == "true"
    with pytest.raises(Exception, match="allowedSchemes"):
        render({**ci_values(CHART / "ci" / "full-values.yaml"),
                "mlflow": {"enabled": True, "webhooks": {"allowedSchemes": "ftp"}}})  # fmt: skip


def test_trigger_submits_to_a_multi_user_kubeflow() -> None:
    """A profile namespace and a projected token with KFP's audience, where the SDK reads it."""
    values = ci_values(CHART / "ci" / "default-values.yaml")
    multi_user = {"kfpNamespace": "team-a", "kfpToken": {"enabled": True, "audience": "pipelines.kubeflow.org",
                                                          "expirationSeconds": 3600}}  # fmt: skip
    objects = render(values | {"trigger": multi_user})
    (trigger,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-trigger")]
    kubernetes_validate.validate(trigger, KUBERNETES_VERSION, strict=True)
    pod = trigger["spec"]["template"]["spec"]
    assert "--kfp-namespace=team-a" in pod["containers"][0]["args"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "kfp-token"]
    source = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert source == {"path": "token", "audience": "pipelines.kubeflow.org", "expirationSeconds": 3600}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "kfp-token")
    assert mount["mountPath"] + "/token" == "/var/run/secrets/kubeflow/pipelines/token"  # the KFP SDK's default
    single = render(values)
    (plain,) = [o for o in single if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-trigger")]
    assert not any(a.startswith("--kfp-namespace") for a in plain["spec"]["template"]["spec"]["containers"][0]["args"])
    assert all(v["name"] != "kfp-token" for v in plain["spec"]["template"]["spec"]["volumes"])


def test_kube_prometheus_stack_selects_the_monitors_and_the_controller_knows_its_install() -> None:
    values = ci_values(CHART / "ci" / "default-values.yaml")
    enabled = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
    objects = render(values | {"monitoring": enabled})
    for kind in ("ServiceMonitor", "PrometheusRule"):
        (obj,) = [o for o in objects if o["kind"] == kind]
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind  # the stack's default selector
    (controller,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-controller")]
    env = {e["name"]: e for e in controller["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PRUNEOPS_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_the_usual_extension_points_reach_every_pruneops_pod() -> None:
    """Service-account annotations, extra env and envFrom, pod annotations and labels, priority,
    topology spread, image digests, and the bundled MLflow's artifact-store credentials."""
    values = ci_values(CHART / "ci" / "full-values.yaml")
    digest = "sha256:" + "a" * 64
    extras = {
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/pruneops"}},
        "podAnnotations": {"vault.hashicorp.com/agent-inject": "true"},
        "podLabels": {"team": "ml"},
        "priorityClassName": "ml-serving",
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}],
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "extraEnvFrom": [{"secretRef": {"name": "mlflow-credentials"}}],
        "image": {**values.get("image", {}), "digest": digest},
        "mlflow": {**values["mlflow"], "artifactCredentials": {"existingSecret": "mlflow-s3"}},
    }  # fmt: skip
    objects = render(values | extras)
    for obj in objects:
        if obj["kind"] not in OPERATOR_KINDS | set(KSERVE_KINDS):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert account["metadata"]["annotations"] == extras["serviceAccount"]["annotations"]
    ours = [o for o in objects if o["kind"] == "Deployment" and not o["metadata"]["name"].endswith("-mlflow")]
    assert {o["metadata"]["name"].rsplit("-", 1)[1] for o in ours} == {"serving", "controller", "trigger", "drift"}
    for deployment in ours:
        template = deployment["spec"]["template"]
        component = template["metadata"]["labels"]["app.kubernetes.io/component"]
        assert template["metadata"]["labels"]["team"] == "ml"
        assert template["metadata"]["annotations"]["vault.hashicorp.com/agent-inject"] == "true"
        assert "checksum/config" in template["metadata"]["annotations"] or component == "controller"
        pod = template["spec"]
        assert pod["priorityClassName"] == "ml-serving"
        (spread,) = pod["topologySpreadConstraints"]
        assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
        for container in pod["containers"]:
            assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"], container["name"]
            assert container["envFrom"] == extras["extraEnvFrom"], container["name"]
            if container["image"].startswith("ghcr.io/pruneops/"):
                assert container["image"] == f"ghcr.io/pruneops/pruneops@{digest}"
    (mlflow,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-mlflow")]
    assert mlflow["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "mlflow-s3"}}]


def test_helm_test_checks_that_the_server_answers_ready() -> None:
    objects = render(ci_values(CHART / "ci" / "default-values.yaml"))
    (test,) = [o for o in objects if o["kind"] == "Pod"]
    kubernetes_validate.validate(test, KUBERNETES_VERSION, strict=True)
    assert test["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = test["spec"]["containers"]
    (service,) = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-serving")]
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "server")
    assert container["command"][-1] == f"http://{service['metadata']['name']}:{port}/v2/health/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] and test["spec"]["restartPolicy"] == "Never"
    # The probe itself, run here against a server that is not ready, then one that is.
    import subprocess
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Ready(BaseHTTPRequestHandler):
        status = 503

        def do_GET(self) -> None:
            self.send_response(self.status)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v2/health/ready"
    probe = [sys.executable, *container["command"][1:-1], url]
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode != 0
    Ready.status = 200
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    server.shutdown()


def test_chart_readme_is_generated_from_the_current_values() -> None:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("chart_readme", ROOT / "scripts" / "chart_readme.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generator  # its dataclasses look their module up there
    spec.loader.exec_module(generator)
    readme = (CHART / "README.md").read_text()
    assert readme == generator.render(), "helm/pruneops/README.md is stale: run `make chart-readme`"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f'| `serving.model` | string | `"{values["serving"]["model"]}"` |' in readme
    assert "| `podAnnotations` | object | `{}` | Added to every pruneops pod" in readme


def test_kserve_mode_deploys_the_same_containers_as_an_inference_service() -> None:
    """KServe mode: an InferenceService and a ServingRuntime (checked against KServe's own API
    types) instead of the Deployment; the sidecar takes KServe's traffic as kserve-container,
    and the chart's Service, ServiceMonitor and network policy still find the pods."""
    kserve = render(ci_values(CHART / "ci" / "kserve-values.yaml"))
    plain = render(ci_values(CHART / "ci" / "kserve-values.yaml") | {"serving": {"mode": "deployment"}})
    kinds = {o["kind"] for o in kserve}
    assert {"InferenceService", "ServingRuntime"} <= kinds and "HorizontalPodAutoscaler" not in kinds
    assert not [o for o in kserve if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-serving")]
    (runtime,) = [o for o in kserve if o["kind"] == "ServingRuntime"]
    (service,) = [o for o in kserve if o["kind"] == "InferenceService"]
    assert check_kserve(runtime, "V1alpha1ServingRuntime") == []
    assert check_kserve(service, "V1beta1InferenceService") == []
    assert check_kserve(service | {"spec": {"predictor": {"replicas": 2}}}, "V1beta1InferenceService") == [
        "spec.predictor.replicas: no such field in V1beta1PredictorSpec"]  # the check can fail  # fmt: skip
    sidecar, server = runtime["spec"]["containers"]
    assert sidecar["name"] == "kserve-container" and sidecar["args"][0] == "sidecar" and server["args"][0] == "serve"
    (deployment,) = [o for o in plain if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-serving")]
    same = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert server == same["server"] and {**sidecar, "name": "sidecar"} == same["sidecar"]
    predictor = service["spec"]["predictor"]
    model_format = {"name": "pruneops", "version": "1"}
    assert predictor["model"] == {"modelFormat": model_format, "runtime": runtime["metadata"]["name"]}
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == "pruneops"
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    (our_service,) = [o for o in kserve if o["kind"] == "Service" and o["metadata"]["name"].endswith("-serving")]
    assert our_service["spec"]["selector"].items() <= predictor["labels"].items()
    (policy,) = [o for o in kserve if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-serving")]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= predictor["labels"].items()


def test_the_sidecars_feed_one_drift_service() -> None:
    """Drift over the whole traffic: every replica's sidecar ships its samples to the drift service."""
    values = ci_values(CHART / "ci" / "default-values.yaml")
    objects = render(values)
    (service,) = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-drift")]
    (drift,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-drift")]
    (serving,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-serving")]
    sidecar = next(c for c in serving["spec"]["template"]["spec"]["containers"] if c["name"] == "sidecar")
    port = values["driftService"]["port"] if "driftService" in values else 8092
    assert f"--drift-service=http://{service['metadata']['name']}:{port}" in sidecar["args"]
    assert not [a for a in sidecar["args"] if a.startswith("--drift-interval")]
    for container in (sidecar, drift["spec"]["template"]["spec"]["containers"][0]):
        (token,) = [e for e in container["env"] if e["name"] == "PRUNEOPS_DRIFT_TOKEN"]
        assert token["valueFrom"]["secretKeyRef"] == {"name": "pruneops-drift", "key": "token"}
    assert (
        drift["spec"]["replicas"] == 1
        and drift["spec"]["template"]["spec"]["containers"][0]["args"][0] == "drift-service"
    )

    alone = render(values | {"driftService": {"enabled": False}})
    assert not [o for o in alone if o["metadata"]["name"].endswith("-drift")]
    serving = next(o for o in alone if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-serving"))
    sidecar = next(c for c in serving["spec"]["template"]["spec"]["containers"] if c["name"] == "sidecar")
    assert any(a.startswith("--drift-interval=") for a in sidecar["args"]) and "PRUNEOPS_DRIFT_TOKEN" not in str(
        sidecar
    )
