"""Attacks on the serving pod, each against the real server and sidecar processes.

From the registry: versions that would run code, lie about their files, or load but not work.
From anonymous clients: state-changing routes, routes and bodies that used to count as the
version's fault, and inputs that used to get 200 with null outputs.
"""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from pruneops.registry import Registry
from tests.serving.conftest import Stack
from tests.serving.test_serving import alias_delivery, infer_body, scrape, served_version, wait_for_version

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("PRUNEOPS_HOME", str(stack.home))
    return Registry()


def refusals(stack: Stack, reason: str) -> float:
    key = ("pruneops_model_load_failures_total", frozenset({("model", "digits"), ("reason", reason)}))
    return scrape(stack.server).get(key, 0.0)


@pytest.mark.parametrize(
    ("role", "reason"),
    [
        ("seven", "smoke_test"),  # 7 outputs where clients get 10
        ("overflow", "smoke_test"),  # weights x 1e37: outputs overflow
        ("nan", "smoke_test"),  # a NaN weight
        ("untrusted", "untrusted_code"),  # arch.json names a module outside the allow-list
        ("evil_task", "untrusted_code"),  # the pruneops.task tag does
        ("tampered", "integrity"),  # weights changed in the artifact store after registration
        ("corrupt", "invalid_model"),  # model.onnx is not ONNX
    ],
)
def test_bad_versions_are_refused_once_and_the_old_one_keeps_serving(
    stack: Stack, registry: Registry, role: str, reason: str
) -> None:
    baseline = stack.versions["baseline"]
    before = refusals(stack, reason)
    registry.rollback("digits", to=stack.versions[role], why=f"attack: {role}")
    try:
        deadline = time.monotonic() + 30
        while refusals(stack, reason) <= before:
            assert time.monotonic() < deadline, f"v{stack.versions[role]} ({role}) was never refused as {reason}"
            assert served_version(stack.sidecar) == baseline
            time.sleep(0.2)
        time.sleep(2)  # several more polls: a refused version is counted once, never retried
        assert refusals(stack, reason) == before + 1
        assert served_version(stack.sidecar) == baseline
    finally:
        registry.rollback("digits", to=baseline, why="restore")
    wait_for_version(stack.server, baseline)
    assert not (stack.home / "pwned").exists(), "a planted module was imported by the server"


@pytest.mark.parametrize("via", ["server", "sidecar"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/repository/models/digits/unload"),
        ("POST", "/v2/repository/models/digits/load"),
        ("GET", "/v2/repository/index"),
        ("POST", "/v1/models/digits:predict"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("DELETE", "/v2/models/digits"),
    ],
)
def test_only_the_v2_surface_is_reachable(stack: Stack, via: str, method: str, path: str) -> None:
    reply = httpx.request(method, getattr(stack, via) + path, json={}, timeout=10)
    assert reply.status_code in (404, 405) and "error" in reply.json()
    assert served_version(getattr(stack, via)) == stack.versions["baseline"]


def test_the_sidecar_does_not_forward_the_servers_own_endpoints(stack: Stack) -> None:
    body = json.dumps({"entity": "model_version_alias", "data": {"name": "digits"}})
    webhook = httpx.post(f"{stack.sidecar}/webhooks/mlflow", content=body, timeout=10)
    assert webhook.status_code == 404
    assert "pruneops_requests_total" in httpx.get(f"{stack.sidecar}/metrics", timeout=10).text  # its own


@pytest.mark.parametrize("via", ["server", "sidecar"])
def test_versioned_routes(stack: Stack, via: str) -> None:
    base, baseline = getattr(stack, via), stack.versions["baseline"]
    pinned = httpx.post(f"{base}/v2/models/digits/versions/{baseline}/infer", json=infer_body(), timeout=10)
    assert pinned.status_code == 200 and pinned.headers["x-pruneops-version"] == baseline
    assert httpx.get(f"{base}/v2/models/digits/versions/{baseline}/ready", timeout=10).status_code == 200
    for path in ("/v2/models/digits/versions/x/infer", "/v2/models/digits/versions/999/infer"):
        reply = httpx.post(base + path, json=infer_body(), timeout=10)
        assert reply.status_code == 404 and "is not served here" in reply.json()["error"]
    assert httpx.get(f"{base}/v2/models/digits/versions/x", timeout=10).status_code == 404


@pytest.mark.parametrize("via", ["server", "sidecar"])
@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_inputs_are_400(stack: Stack, via: str, token: str) -> None:
    data = ", ".join(["0.5"] * 63 + [token])
    body = f'{{"inputs": [{{"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [{data}]}}]}}'
    reply = httpx.post(f"{getattr(stack, via)}/v2/models/digits/infer", content=body,
                       headers={"content-type": "application/json"}, timeout=10)  # fmt: skip
    assert reply.status_code == 400 and "NaN or infinity" in reply.json()["error"]


def test_a_batch_over_the_limit_is_400(stack: Stack) -> None:
    rows = np.zeros((1025, 1, 8, 8), np.float32)
    reply = httpx.post(f"{stack.sidecar}/v2/models/digits/infer", json=infer_body(rows), timeout=30)
    assert reply.status_code == 400 and "over this server's limit of 1024" in reply.json()["error"]


def test_alias_webhook_deliveries_are_deduplicated(stack: Stack) -> None:
    body, headers = alias_delivery("dup-1")
    first = httpx.post(f"{stack.server}/webhooks/mlflow", content=body, headers=headers, timeout=10)
    again = httpx.post(f"{stack.server}/webhooks/mlflow", content=body, headers=headers, timeout=10)
    assert first.status_code == 202 and again.status_code == 409


def test_the_follower_restores_a_missing_model(stack: Stack, registry: Registry) -> None:
    from prometheus_client import CollectorRegistry

    from pruneops.monitoring.metrics import ServerMetrics
    from pruneops.serving.app import create_app
    from pruneops.serving.server import RegistryModel

    metrics = ServerMetrics(CollectorRegistry())
    model = RegistryModel("digits", registry, metrics)
    create_app(model)
    assert model.load()
    model.repository.unload("digits")  # what KServe's unload route did to the served model
    assert model.repository.get_model("digits") is None
    model.refresh()
    assert model.repository.get_model("digits") is model and model.ready
    assert metrics.restores.labels(model="digits")._value.get() == 1


def test_a_version_the_registry_cannot_hand_over_is_counted_once_and_tried_again(
    stack: Stack, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage of the artifact store is tried again every poll, but it is one failure, not one per poll."""
    from prometheus_client import CollectorRegistry

    import pruneops.serving.server
    from pruneops.errors import RegistryError
    from pruneops.monitoring.metrics import ServerMetrics
    from pruneops.serving.server import RegistryModel

    metrics = ServerMetrics(CollectorRegistry())
    model = RegistryModel("digits", registry, metrics)

    def artifact_store_down(*_args: object, **_kwargs: object) -> None:
        raise RegistryError("downloading model of digits: connection refused")

    real_load = pruneops.serving.server.load_version
    monkeypatch.setattr(pruneops.serving.server, "load_version", artifact_store_down)
    for _ in range(5):
        model.refresh()
    assert metrics.load_failures.labels(model="digits", reason="registry")._value.get() == 1
    assert model.current is None
    monkeypatch.setattr(pruneops.serving.server, "load_version", real_load)  # the store is back
    model.refresh()
    assert model.current is not None and model.current.version == registry.aliases("digits")["champion"]
    assert metrics.load_failures.labels(model="digits", reason="registry")._value.get() == 1


def fault_count(url: str) -> float:
    from pruneops.monitoring.metrics import SERVER_FAULT_CODES

    return sum(
        value
        for (name, labels), value in scrape(url).items()
        if name == "pruneops_requests_total" and dict(labels)["code"] in SERVER_FAULT_CODES
    )


def test_no_client_request_moves_the_rollback_signal(stack: Stack) -> None:
    """Everything a client can send through the sidecar; the server-fault count must not move."""
    from tests.serving.test_serving import BAD

    base = f"{stack.sidecar}/v2/models/digits"
    json_type = {"content-type": "application/json"}
    before = fault_count(stack.sidecar)
    sent = 0
    with httpx.Client(timeout=30) as client:
        for body, _status, _message in BAD:
            sent += client.post(f"{base}/infer", content=body, headers=json_type).status_code >= 400
        attacks = [
            ("POST", f"{base}/versions/x/infer", json.dumps(infer_body()).encode(), json_type),
            ("POST", f"{base}/versions/999/infer", json.dumps(infer_body()).encode(), json_type),
            ("POST", f"{stack.sidecar}/v2/models/nope/infer", json.dumps(infer_body()).encode(), json_type),
            ("POST", f"{base}/infer", b"0" * (9 * 1024 * 1024), json_type),
            ("POST", f"{base}/infer", json.dumps(infer_body(np.zeros((1025, 1, 8, 8), np.float32))).encode(),
             json_type),
            ("POST", f"{base}/infer", b'{"inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32", '
             b'"data": [NaN' + b", 0" * 63 + b"]}]}", json_type),
            # V2's binary tensor extension, with headers that lie about the JSON part's length.
            ("POST", f"{base}/infer", b'{"inputs":[{"name":"x","shape":[1,1,8,8],"datatype":"FP32",'
             b'"parameters":{"binary_data_size":256}}]}' + b"\x00" * 10,
             {"inference-header-content-length": "70", "content-type": "application/octet-stream"}),
            ("POST", f"{base}/infer", b"\x00" * 300, {"inference-header-content-length": "999999"}),
            ("POST", f"{base}/infer", b"{}", {"inference-header-content-length": "-5"}),
            ("POST", f"{stack.sidecar}/v2/repository/models/digits/unload", b"", {}),
            ("GET", f"{base}/versions/7", b"", {}),
            ("PUT", f"{base}/infer", b"{}", json_type),
        ]  # fmt: skip
        for method, url, body, headers in attacks:
            reply = client.request(method, url, content=body, headers=headers)
            assert 400 <= reply.status_code < 500, (url, headers, reply.text)
            sent += 1
    assert sent == len(BAD) + len(attacks), "a bad request was answered 2xx"
    assert fault_count(stack.sidecar) == before
