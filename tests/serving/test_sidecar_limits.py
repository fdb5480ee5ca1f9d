"""The sidecar protects itself and the server: 503 with Retry-After, 504, 502, bounded windows.

The sidecar runs on an event loop in a thread of the test process, spoken to over real HTTP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest

from pruneops.monitoring.window import SampleWindow
from pruneops.serving.sidecar import Sidecar
from tests.conftest import free_port, wait_http

pytestmark = pytest.mark.integration


class SlowUpstream(BaseHTTPRequestHandler):
    """A V2-ish server that takes 1 s to answer."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(1.0)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), SlowUpstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread, stopped after the test."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def start_sidecar(loop: asyncio.AbstractEventLoop, upstream: str, **options: object) -> str:
    port = free_port()
    sidecar = Sidecar(upstream, **options)  # type: ignore[arg-type]
    asyncio.run_coroutine_threadsafe(sidecar.start("127.0.0.1", port), loop).result(timeout=10)
    wait_http(f"http://127.0.0.1:{port}/metrics", timeout=20)
    return f"http://127.0.0.1:{port}"


def test_overload_answers_503_with_retry_after(loop: asyncio.AbstractEventLoop, slow_upstream: str) -> None:
    sidecar = start_sidecar(loop, slow_upstream, max_in_flight=1)
    results: list[httpx.Response] = []

    def call() -> None:
        results.append(httpx.post(f"{sidecar}/v2/models/m/infer", json={}, timeout=10))

    first = threading.Thread(target=call)
    first.start()
    time.sleep(0.3)  # the first request now holds the only slot
    second = httpx.post(f"{sidecar}/v2/models/m/infer", json={}, timeout=10)
    first.join()
    assert results[0].status_code == 200
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert "in flight" in second.json()["error"]
    metrics = httpx.get(f"{sidecar}/metrics").text
    assert 'pruneops_requests_rejected_total{reason="overloaded"} 1.0' in metrics


def test_sigterm_lets_the_request_in_flight_finish(slow_upstream: str) -> None:
    """The sidecar as the pod runs it: on SIGTERM it stops accepting and answers what it holds."""
    port = free_port()
    sidecar = subprocess.Popen([sys.executable, "-m", "pruneops.cli", "sidecar", "--upstream", slow_upstream,
                                "--port", str(port), "--drift-interval", "0"],
                               env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", timeout=60, process=sidecar)
        results: list[httpx.Response] = []
        call = threading.Thread(target=lambda: results.append(httpx.post(f"http://127.0.0.1:{port}/v2/models/m/infer",
                                                                          json={}, timeout=10)))  # fmt: skip
        call.start()
        time.sleep(0.3)  # the upstream holds it for 1 s
        sidecar.send_signal(signal.SIGTERM)
        call.join()
        assert results[0].status_code == 200
        assert sidecar.wait(timeout=10) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    finally:
        sidecar.kill()


def test_slow_upstream_gives_504(loop: asyncio.AbstractEventLoop, slow_upstream: str) -> None:
    sidecar = start_sidecar(loop, slow_upstream, timeout=0.2)
    reply = httpx.post(f"{sidecar}/v2/models/m/infer", json={}, timeout=10)
    assert reply.status_code == 504 and "did not answer within 0.2s" in reply.json()["error"]


def test_unreachable_upstream_gives_502(loop: asyncio.AbstractEventLoop) -> None:
    sidecar = start_sidecar(loop, f"http://127.0.0.1:{free_port()}")
    reply = httpx.post(f"{sidecar}/v2/models/m/infer", json={}, timeout=10)
    assert reply.status_code == 502 and "unreachable" in reply.json()["error"]


def test_oversized_body_gives_413(loop: asyncio.AbstractEventLoop, slow_upstream: str) -> None:
    sidecar = start_sidecar(loop, slow_upstream, max_body=1000)
    with httpx.Client(timeout=10) as client:
        reply = client.post(f"{sidecar}/v2/models/m/infer", content=b"0" * 5000)
        assert reply.status_code == 413 and "over 1000 bytes" in reply.json()["error"]
        # Chunked, so no Content-Length announces it: still refused, and the connection lives on.
        chunked = client.post(f"{sidecar}/v2/models/m/infer", content=iter([b"0" * 600, b"0" * 600]))
        assert chunked.status_code == 413
        assert client.get(f"{sidecar}/metrics").status_code == 200
    metrics = httpx.get(f"{sidecar}/metrics").text
    assert 'pruneops_requests_rejected_total{reason="too_large"} 2.0' in metrics


def test_invalid_upstream_reply_gives_502(loop: asyncio.AbstractEventLoop) -> None:
    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        writer.close()

    upstream = asyncio.run_coroutine_threadsafe(asyncio.start_server(not_http, "127.0.0.1", 0), loop).result(10)
    sidecar = start_sidecar(loop, f"http://127.0.0.1:{upstream.sockets[0].getsockname()[1]}")
    reply = httpx.get(f"{sidecar}/v2/health/ready", timeout=10)
    assert reply.status_code == 502 and "invalid reply" in reply.json()["error"]
    assert 'pruneops_requests_rejected_total{reason="upstream_invalid"} 1.0' in httpx.get(f"{sidecar}/metrics").text


@pytest.mark.unit
def test_window_is_bounded() -> None:
    window = SampleWindow(max_rows=100)
    for _ in range(30):
        window.add(np.ones((8, 1, 8, 8), np.float32), np.zeros((8, 10), np.float32))
    inputs, outputs = window.snapshot()
    assert inputs.shape == (100, 64) and outputs.shape == (100, 10)
