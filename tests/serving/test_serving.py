"""The model server and sidecar as processes, spoken to over real HTTP by a real V2 client."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pruneops.registry import Registry
from pruneops.serving.sidecar import SAMPLE_FLUSH_S
from pruneops.webhooks import sign
from tests.serving.conftest import SECRET, Stack

pytestmark = pytest.mark.integration
DIGITS = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)


@pytest.fixture
def registry(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("PRUNEOPS_HOME", str(stack.home))
    return Registry()


def infer_body(batch: np.ndarray = DIGITS, datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": "x", "shape": list(batch.shape), "datatype": datatype, "data": batch.ravel().tolist()}]}


def served_version(url: str) -> str:
    reply = httpx.post(f"{url}/v2/models/digits/infer", json=infer_body(), timeout=10)
    reply.raise_for_status()
    return reply.headers["x-pruneops-version"]


def wait_for_version(url: str, version: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while served_version(url) != version:
        assert time.monotonic() < deadline, f"v{version} never served"
        time.sleep(0.1)


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return values


@pytest.mark.parametrize("via", ["server", "sidecar"])
def test_protocol_with_tritonclient(stack: Stack, registry: Registry, via: str) -> None:
    url = getattr(stack, via).removeprefix("http://")
    client = triton.InferenceServerClient(url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    metadata = client.get_model_metadata("digits")
    assert metadata["name"] == "digits" and metadata["inputs"][0]["shape"] == [-1, 1, 8, 8]
    assert [port["name"] for port in metadata["outputs"]] == ["output"]  # not the exporter's node name
    tensor = triton.InferInput("x", list(DIGITS.shape), "FP32")
    tensor.set_data_from_numpy(DIGITS, binary_data=False)
    result = client.infer("digits", [tensor])
    logits = result.as_numpy(result.get_response()["outputs"][0]["name"])
    assert logits.shape == (4, 10) and result.get_response()["model_version"] == stack.versions["baseline"]
    import torch

    expected = registry.load_model("digits", stack.versions["baseline"])(torch.from_numpy(DIGITS)).detach().numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)


BAD = [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps(infer_body(np.zeros((2, 3), np.float32))).encode(), 400, "does not match the model"),
    (json.dumps(infer_body(datatype="INT64")).encode(), 400, "datatype INT64"),
    (json.dumps({"inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 5}]}).encode(),
     400, "does not fill shape"),
    (json.dumps({"nothing": 1}).encode(), 422, "inputs"),
]  # fmt: skip


@pytest.mark.parametrize("via", ["server", "sidecar"])
@pytest.mark.parametrize(("body", "status", "message"), BAD)
def test_bad_input_is_4xx_with_error(stack: Stack, via: str, body: bytes, status: int, message: str) -> None:
    reply = httpx.post(f"{getattr(stack, via)}/v2/models/digits/infer", content=body,
                       headers={"content-type": "application/json"}, timeout=10)  # fmt: skip
    assert reply.status_code == status and message in reply.json()["error"]


@pytest.mark.parametrize("via", ["server", "sidecar"])
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_json_sent_as_curl_d_sends_it_is_read_as_json(stack: Stack, via: str, content_type: str | None) -> None:
    """`curl -d BODY URL` says form-urlencoded; V2 says JSON unless the binary header is there."""
    headers = {"content-type": content_type} if content_type else {}
    url = f"{getattr(stack, via)}/v2/models/digits/infer"
    reply = httpx.post(url, content=json.dumps(infer_body()).encode(), headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["outputs"][0]["data"]) == 10 * len(DIGITS)
    broken = httpx.post(url, content=b"{not json", headers=headers, timeout=10)
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]


@pytest.mark.parametrize("via", ["server", "sidecar"])
def test_unknown_model_and_oversized_body(stack: Stack, via: str) -> None:
    base = getattr(stack, via)
    unknown = httpx.post(f"{base}/v2/models/nope/infer", json=infer_body(), timeout=10)
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    huge = httpx.post(f"{base}/v2/models/digits/infer", content=b"0" * (9 * 1024 * 1024), timeout=30,
                      headers={"content-type": "application/json"})  # fmt: skip
    assert huge.status_code == 413 and "error" in huge.json()


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(
        ["inputs", "name", "shape", "datatype", "data", "id", "parameters", "outputs"]), inner, max_size=5),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=values)
def test_no_body_gives_a_5xx(stack: Stack, body: object) -> None:
    reply = httpx.post(f"{stack.server}/v2/models/digits/infer", json=body, timeout=10)
    assert reply.status_code < 500, (body, reply.text)
    if reply.status_code >= 400:
        assert "error" in reply.json() or "detail" not in reply.json()


def test_hot_swaps_under_load_fail_no_request(stack: Stack, registry: Registry) -> None:
    baseline, small = stack.versions["baseline"], stack.versions["small"]
    stop, outcomes = threading.Event(), Counter()

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                reply = http.post(f"{stack.sidecar}/v2/models/digits/infer", json=infer_body())
                outcomes[(reply.status_code, reply.headers.get("x-pruneops-version"))] += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for swap in range(10):
            target = small if swap % 2 == 0 else baseline
            registry.rollback("digits", to=target, why=f"swap {swap}")
            wait_for_version(stack.server, target)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    failed = {k: n for k, n in outcomes.items() if k[0] != 200}
    assert failed == {}, failed
    assert outcomes[(200, baseline)] > 0 and outcomes[(200, small)] > 0
    assert registry.alias("digits", "champion").version == baseline


def test_sidecar_metrics_after_known_traffic(stack: Stack) -> None:
    version = stack.versions["baseline"]
    labels = frozenset({("model", "digits"), ("version", version), ("alias", "champion"), ("code", "200")})
    before = scrape(stack.sidecar)
    for _ in range(7):
        assert httpx.post(f"{stack.sidecar}/v2/models/digits/infer", json=infer_body(), timeout=10).status_code == 200
    for _ in range(2):
        httpx.post(f"{stack.sidecar}/v2/models/digits/infer", json=infer_body(datatype="INT64"), timeout=10)
    after = scrape(stack.sidecar)
    assert after[("pruneops_requests_total", labels)] - before.get(("pruneops_requests_total", labels), 0) == 7
    bad = frozenset({("model", "digits"), ("version", version), ("alias", "champion"), ("code", "400")})
    assert after[("pruneops_requests_total", bad)] - before.get(("pruneops_requests_total", bad), 0) == 2
    count = frozenset({("model", "digits"), ("version", version), ("alias", "champion")})
    grew = after[("pruneops_request_duration_seconds_count", count)] - before.get(
        ("pruneops_request_duration_seconds_count", count), 0
    )
    assert grew == 9
    key = ("pruneops_sampled_rows_total", frozenset({("model", "digits")}))
    deadline = time.monotonic() + SAMPLE_FLUSH_S + 10  # sampled pairs are decoded in batches, after the replies
    while scrape(stack.sidecar).get(key, 0) < 7 * len(DIGITS) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert scrape(stack.sidecar).get(key, 0) >= 7 * len(DIGITS)  # every request sampled here (--sample-every 1)


def test_server_exports_model_info_and_shadow_agreement(stack: Stack, registry: Registry) -> None:
    registry.set_alias("digits", "challenger", stack.versions["small"], "shadow test")
    try:
        deadline = time.monotonic() + 20
        while True:
            httpx.post(f"{stack.server}/v2/models/digits/infer", json=infer_body(), timeout=10)
            metrics = scrape(stack.server)
            ratio = [v for (name, labels), v in metrics.items() if name == "pruneops_shadow_agreement_ratio"]
            if ratio:
                break
            assert time.monotonic() < deadline, "no shadow agreement exported"
            time.sleep(0.2)
        assert 0.0 <= ratio[0] <= 1.0
        info = [dict(labels) for (name, labels), v in metrics.items() if name == "pruneops_model_info" and v == 1]
        assert {"alias": "champion", "version": stack.versions["baseline"]}.items() <= next(
            i for i in info if i["alias"] == "champion"
        ).items()
    finally:
        registry.remove_alias("digits", "challenger", "shadow test done")


def alias_delivery(delivery_id: str) -> tuple[bytes, dict[str, str]]:
    """A signed MLflow ``model_version_alias.created`` delivery for digits: (body, headers)."""
    body = json.dumps({"entity": "model_version_alias", "action": "created",
                       "data": {"name": "digits", "alias": "champion", "version": "1"}}).encode()  # fmt: skip
    timestamp = str(int(time.time()))
    headers = {"X-MLflow-Signature": sign(SECRET, delivery_id, timestamp, body), "X-MLflow-Timestamp": timestamp,
               "X-MLflow-Delivery-Id": delivery_id, "content-type": "application/json"}  # fmt: skip
    return body, headers


def test_alias_webhook(stack: Stack) -> None:
    body, headers = alias_delivery("d-1")
    ok = httpx.post(f"{stack.server}/webhooks/mlflow", content=body, headers=headers, timeout=10)
    assert ok.status_code == 202 and ok.json()["status"] == "refreshing"
    forged = httpx.post(f"{stack.server}/webhooks/mlflow", content=body,
                        headers={**headers, "X-MLflow-Signature": "v1,AAAA"}, timeout=10)  # fmt: skip
    assert forged.status_code == 401 and forged.json()["error"] == "signature does not match"


def test_canary_routes_the_configured_share(stack: Stack, registry: Registry) -> None:
    import asyncio

    from kserve import InferInput, InferRequest
    from prometheus_client import CollectorRegistry

    from pruneops.monitoring.metrics import ServerMetrics
    from pruneops.serving.server import RegistryModel

    registry.set_alias("digits", "challenger", stack.versions["small"], "canary test")
    try:
        served: dict[float, Counter] = {}
        for share in (1.0, 0.0):
            model = RegistryModel("digits", registry, ServerMetrics(CollectorRegistry()), canary=share)
            assert model.load()
            # With no canary share (and no shadow) the challenger is not even loaded.
            assert (model.challenger is not None) == (share > 0)
            versions: Counter = Counter()
            for _ in range(20):
                tensor = InferInput("x", list(DIGITS.shape), "FP32", data=DIGITS.ravel().tolist())
                headers: dict[str, str] = {}
                asyncio.run(model.predict(InferRequest("digits", [tensor]), {}, headers))
                versions[headers["x-pruneops-version"]] += 1
            served[share] = versions
        assert served[1.0] == Counter({stack.versions["small"]: 20})
        assert served[0.0] == Counter({stack.versions["baseline"]: 20})
    finally:
        registry.remove_alias("digits", "challenger", "canary test done")


def test_promotion_and_rollback_swap_loaded_versions_without_a_download(
    stack: Stack, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The challenger, once promoted, and the version it replaced (the rollback target) are
    held loaded: both moves are swaps with no download, so a rollback is as fast as a poll."""
    from prometheus_client import CollectorRegistry

    import pruneops.serving.server
    from pruneops.monitoring.metrics import ServerMetrics
    from pruneops.serving.server import RegistryModel

    loads: list[str] = []
    real_load = pruneops.serving.server.load_version

    def counted(registry_: Registry, name: str, ref: str, *args: object, **kwargs: object) -> object:
        loads.append(ref)
        return real_load(registry_, name, ref, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pruneops.serving.server, "load_version", counted)
    baseline, small = stack.versions["baseline"], stack.versions["small"]
    registry.set_alias("digits", "challenger", small, "promotion test")
    try:
        model = RegistryModel("digits", registry, ServerMetrics(CollectorRegistry()), canary=0.5)
        assert model.load() and loads == [baseline, small]
        registry.set_alias("digits", "champion", small, "promotion test")
        model.refresh()
        assert model.current is not None and (model.current.version, model.current.alias) == (small, "champion")
        registry.set_alias("digits", "champion", baseline, "rollback test")
        model.refresh()
        assert model.current is not None and (model.current.version, model.current.alias) == (baseline, "champion")
        assert loads == [baseline, small]  # neither move downloaded anything
    finally:
        registry.set_alias("digits", "champion", baseline, "promotion test done")
        registry.remove_alias("digits", "challenger", "promotion test done")


def test_drift_samples_binary_extension_requests(stack: Stack) -> None:
    """tritonclient's default encoding (V2's binary tensor extension) is sampled like JSON."""
    client = triton.InferenceServerClient(stack.sidecar.removeprefix("http://"))
    tensor = triton.InferInput("x", list(DIGITS.shape), "FP32")
    tensor.set_data_from_numpy(DIGITS, binary_data=True)
    key = ("pruneops_sampled_rows_total", frozenset({("model", "digits")}))
    time.sleep(SAMPLE_FLUSH_S + 0.5)  # samples of earlier tests still waiting to be decoded land first
    before = scrape(stack.sidecar).get(key, 0)
    for _ in range(3):
        result = client.infer("digits", [tensor], outputs=[triton.InferRequestedOutput(
            client.get_model_metadata("digits")["outputs"][0]["name"], binary_data=True)])  # fmt: skip
        assert result.as_numpy(result.get_response()["outputs"][0]["name"]).shape == (len(DIGITS), 10)
    deadline = time.monotonic() + SAMPLE_FLUSH_S + 10  # sampled pairs are decoded in batches, after the replies
    while scrape(stack.sidecar).get(key, 0) - before < 3 * len(DIGITS) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert scrape(stack.sidecar)[key] - before == 3 * len(DIGITS)
