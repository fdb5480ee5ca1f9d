"""The drift service: every replica's samples in one window per model, over real HTTP.

Two sidecars (each with its own shipper, as two pods would have) proxy to a V2 stub server and
ship their sampled rows to one drift service; drift is computed over the rows of both. Then the
service's boundary: token, body size, payload shape, number of models.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from pruneops.monitoring.drift import Reference
from pruneops.monitoring.drift_service import SAMPLES_PATH, DriftService, create_app
from pruneops.serving.drift_client import DriftShipper
from pruneops.serving.sidecar import Sidecar
from tests.conftest import free_port, wait_http

pytestmark = pytest.mark.integration
TOKEN = "drift-secret"
FEATURES = 4


class V2Stub(BaseHTTPRequestHandler):
    """Answers every inference with two class scores, as version 3, the champion."""

    def do_POST(self) -> None:
        rows = len(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["inputs"][0]["data"]) // FEATURES
        body = json.dumps(
            {"outputs": [{"name": "y", "shape": [rows, 2], "datatype": "FP32", "data": [0.1, 0.9] * rows}]}
        )
        self.send_response(200)
        for name, value in (("Content-Type", "application/json"), ("x-pruneops-version", "3"),
                            ("x-pruneops-alias", "champion")):  # fmt: skip
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def reference(model: str, version: str) -> Reference:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, FEATURES)), columns=[f"f{i}" for i in range(FEATURES)])
    return Reference(model, version, frame)


@pytest.fixture
def service() -> Iterator[tuple[DriftService, str]]:
    drift = DriftService(CollectorRegistry(), load_reference=reference, max_models=2, min_rows=10,
                         max_batch_rows=500, start_workers=False)  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(drift, TOKEN), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
    yield drift, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_drift_covers_the_traffic_of_every_replica(service: tuple[DriftService, str]) -> None:
    drift, url = service
    upstream = ThreadingHTTPServer(("127.0.0.1", free_port()), V2Stub)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    shippers, sidecars = [], []
    for _ in range(2):  # two pods
        shipper = DriftShipper(url, TOKEN, batch_rows=10_000)
        sidecar = Sidecar(f"http://127.0.0.1:{upstream.server_address[1]}", sample_every=1, sink=shipper.add)
        port = free_port()
        asyncio.run_coroutine_threadsafe(sidecar.start("127.0.0.1", port), loop).result(10)
        shippers.append(shipper)
        sidecars.append(f"http://127.0.0.1:{port}")
    rng = np.random.default_rng(1)
    sent = {0: 0, 1: 0}
    for i in range(40):
        replica = i % 2 if i < 30 else 0  # uneven: 25 requests to one pod, 15 to the other
        rows = rng.normal(size=(2, FEATURES)).round(4)
        body = {"inputs": [{"name": "x", "shape": [2, FEATURES], "datatype": "FP32", "data": rows.ravel().tolist()}]}
        assert httpx.post(f"{sidecars[replica]}/v2/models/m/infer", json=body, timeout=10).status_code == 200
        sent[replica] += 2
    deadline = time.monotonic() + 10  # samples are decoded in the sidecars' executor threads
    while sum(s.waiting for s in shippers) < sum(sent.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [s.flush() for s in shippers] == [sent[0], sent[1]]
    assert drift.windows["m"].added == 80 and drift.target("m") == ("m", "3")
    result = drift.workers["m"].run_once()
    assert result is not None and result.rows == 80  # both pods' rows, one answer
    metrics = httpx.get(f"{url}/metrics").text
    assert 'pruneops_drift_window_rows{model="m",version="3"} 80.0' in metrics
    assert 'pruneops_drift_samples_received_total{model="m"} 80.0' in metrics
    upstream.shutdown()
    loop.call_soon_threadsafe(loop.stop)


def post(url: str, body: bytes, token: str | None = TOKEN) -> httpx.Response:
    headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {token}"} if token else {})
    return httpx.post(f"{url}{SAMPLES_PATH}", content=body, headers=headers, timeout=30)


def sample(model: str = "m", rows: int = 2, data: object = None) -> bytes:
    inputs = data if data is not None else [[0.5] * FEATURES] * rows
    return json.dumps({"samples": [{"model": model, "version": "1", "alias": "champion", "inputs": inputs}]}).encode()


def test_the_boundary_refuses_before_it_holds(service: tuple[DriftService, str]) -> None:
    drift, url = service
    assert post(url, sample(), token=None).status_code == 401
    assert post(url, sample(), token="wrong").status_code == 401
    assert post(url, b"x" * (5 * 1024 * 1024)).status_code == 413  # capped before the token is even read
    assert post(url, b"not json").status_code == 400
    assert post(url, sample(data=[[1.0, "x"]])).status_code == 400
    assert post(url, sample(data=[[float("nan")] * FEATURES])).status_code == 400
    assert post(url, sample(rows=501)).status_code == 400  # more rows than one batch may hold
    assert drift.windows == {}  # nothing refused was kept
    assert post(url, sample("a")).json() == {"rows": 2}
    assert post(url, sample("b")).status_code == 200
    refused = post(url, sample("c"))  # max_models=2: windows stay bounded
    assert refused.status_code == 429 and "refused" in refused.json()["error"]
    assert sorted(drift.windows) == ["a", "b"]
    assert 'pruneops_drift_samples_refused_total{reason="unauthorized"} 2.0' in httpx.get(f"{url}/metrics").text


@pytest.mark.unit
def test_a_sidecar_pointed_at_a_drift_service_needs_its_token() -> None:
    ran = subprocess.run([sys.executable, "-m", "pruneops.cli", "sidecar", "--drift-service", "http://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert ran.returncode == 1 and "PRUNEOPS_DRIFT_TOKEN" in ran.stderr
