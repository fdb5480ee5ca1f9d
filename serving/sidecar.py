"""The sidecar: a reverse proxy in front of any V2 model server, measuring what passes through.

It forwards every request to the model server and records, per request,
``pruneops_request_duration_seconds`` and ``pruneops_requests_total{code}`` labelled with
the model, version and alias the server reports in ``x-pruneops-version`` and
``x-pruneops-alias``; error replies, which carry no such headers, get the version that
model last served, and a model the server never confirmed is ``unknown`` (labels stay
bounded). It also records in-flight requests and payload sizes, and serves ``/metrics``.
Every ``sample_every``-th successful inference has its decoded input rows (and output rows)
copied into a bounded window, which the drift worker reads (monitoring).

Protection: a body over ``max_body`` gets 413; past ``max_in_flight`` concurrent requests
it answers 503 with ``Retry-After`` instead of queueing; a server slower than ``timeout``
gets 504; an unreachable one gets 502. All of these answer ``{"error": ...}``.

The upstream client is aiohttp's, not httpx's: on 2 cores httpx cost about 3 ms of CPU per
forwarded request and saturated the sidecar at 200 requests/s, aiohttp about 1 ms
(``benchmarks/serving_overhead.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from monitoring.metrics import RequestMetrics
from serving.limits import MAX_BODY_BYTES, drained_if_oversized

INFER_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(/versions/[^/]+)?/infer$")
# Bodies pass through as bytes (no decompression), so content-encoding travels with them.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class SampleWindow:
    """The most recent sampled input and output rows, bounded to ``max_rows`` each."""

    max_rows: int = 5000
    added: int = field(default=0, init=False)  # rows ever added, so a reader can tell what is new
    inputs: deque[np.ndarray] = field(init=False)
    outputs: deque[np.ndarray] = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.inputs, self.outputs = deque(maxlen=self.max_rows), deque(maxlen=self.max_rows)

    def add(self, inputs: np.ndarray, outputs: np.ndarray | None) -> int:
        """Append one row per batch item (flattened); returns the rows added."""
        with self.lock:
            self.added += len(inputs)
            for row in inputs.reshape(len(inputs), -1):
                self.inputs.append(row.astype(np.float32, copy=False))
            if outputs is not None:
                for row in outputs.reshape(len(outputs), -1):
                    self.outputs.append(row.astype(np.float32, copy=False))
        return len(inputs)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the window as 2-D arrays (empty when nothing was sampled)."""
        with self.lock:
            ins = np.stack(list(self.inputs)) if self.inputs else np.empty((0, 0), np.float32)
            outs = np.stack(list(self.outputs)) if self.outputs else np.empty((0, 0), np.float32)
        return ins, outs


def create_sidecar(
    upstream: str,
    registry: CollectorRegistry | None = None,
    window: SampleWindow | None = None,
    max_in_flight: int = 64,
    max_body: int = MAX_BODY_BYTES,
    timeout: float = 10.0,
    sample_every: int = 10,
) -> Any:
    """The sidecar as an ASGI app (Starlette) forwarding to ``upstream`` (``http://host:port``)."""
    import aiohttp
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    registry = registry if registry is not None else CollectorRegistry()
    metrics = RequestMetrics(registry)
    window = window if window is not None else SampleWindow()
    upstream = upstream.rstrip("/")
    # Created in the lifespan: an aiohttp session belongs to the event loop that serves.
    sessions: list[aiohttp.ClientSession] = []
    in_flight = 0
    counter = 0
    # model -> (version, alias) it last served; only names the server confirmed, so bounded.
    last_served: dict[str, tuple[str, str]] = {}

    def refuse(status: int, reason: str, message: str, retry: bool = False) -> JSONResponse:
        metrics.rejected.labels(reason=reason).inc()
        return JSONResponse({"error": message}, status_code=status, headers={"Retry-After": "1"} if retry else None)

    async def metrics_endpoint(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    async def proxy(request: Request) -> Response:
        nonlocal in_flight, counter
        if await drained_if_oversized(request, max_body):
            return refuse(413, "too_large", f"request body over {max_body} bytes")
        if in_flight >= max_in_flight:
            return refuse(503, "overloaded", f"more than {max_in_flight} requests in flight; retry", retry=True)
        in_flight += 1
        metrics.in_flight.inc()
        started = time.perf_counter()
        try:
            body = await request.body()
            metrics.request_bytes.observe(len(body))
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
            if "content-type" not in headers and "inference-header-content-length" not in headers and body:
                headers["content-type"] = "application/json"  # V2's default encoding
            url = upstream + request.url.path
            try:
                async with sessions[0].request(
                    request.method, url, params=list(request.query_params.multi_items()), data=body, headers=headers
                ) as reply:
                    content = await reply.read()
                    status, reply_headers = reply.status, reply.headers
            except TimeoutError:
                return refuse(504, "upstream_timeout", f"model server did not answer within {timeout:g}s")
            except aiohttp.ClientError as err:
                return refuse(502, "upstream_unreachable", f"model server unreachable: {type(err).__name__}")
            elapsed = time.perf_counter() - started
            match = INFER_PATH.match(request.url.path)
            labels = _labels(match["model"] if match else None, reply_headers, last_served)
            if match:
                metrics.duration.labels(**labels).observe(elapsed)
                metrics.requests.labels(**labels, code=str(status)).inc()
                counter += 1
                if status == 200 and counter % sample_every == 0:
                    # Decoded in a thread, not awaited: sampling never delays the response.
                    asyncio.get_running_loop().run_in_executor(
                        None, _sample, window, metrics, labels["model"], body, content
                    )
            metrics.response_bytes.observe(len(content))
            out_headers = {k: v for k, v in reply_headers.items() if k.lower() not in HOP_HEADERS}
            return Response(content, status_code=status, headers=out_headers)
        finally:
            in_flight -= 1
            metrics.in_flight.dec()

    routes = [
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/{path:path}", proxy, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=max_in_flight)
        sessions.append(
            aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=timeout),
                auto_decompress=False,
                # Forward the client's headers, not aiohttp's defaults (no unasked-for gzip).
                skip_auto_headers=("Accept-Encoding", "User-Agent"),
            )
        )
        yield
        await sessions.pop().close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.window, app.state.registry, app.state.last_served = window, registry, last_served
    return app


def served_champion(last_served: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The (model, version) the server last answered as champion, else any it answered; None before traffic.

    >>> served_champion({"digits": ("3", "champion")})
    ('digits', '3')
    """
    for model, (version, alias) in list(last_served.items()):
        if alias == "champion":
            return model, version
    return next(((m, v) for m, (v, _a) in list(last_served.items())), None)


def _labels(model: str | None, headers: Any, last_served: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Metric labels for one reply: what the server says it served.

    Error replies carry no version headers (the server's error handlers build them), so
    they are labelled with the version that model last served, which is what an error ratio
    by version needs. A model the server never confirmed is ``unknown``, so labels stay bounded.
    """
    version, alias = headers.get("x-pruneops-version"), headers.get("x-pruneops-alias", "unknown")
    if model is not None and version is not None:
        last_served[model] = (version, alias)
        return {"model": model, "version": version, "alias": alias}
    if model is not None and model in last_served:
        version, alias = last_served[model]
        return {"model": model, "version": version, "alias": alias}
    return {"model": "unknown", "version": "unknown", "alias": "unknown"}


def _sample(window: SampleWindow, metrics: RequestMetrics, model: str, body: bytes, reply: bytes) -> None:
    """Decode a V2 JSON request/response pair into rows; anything else is skipped."""
    try:
        request = json.loads(body)["inputs"][0]
        inputs = np.asarray(request["data"], dtype=np.float32).reshape(request["shape"])
        outputs = None
        response = json.loads(reply).get("outputs") or []
        if response and "data" in response[0]:
            outputs = np.asarray(response[0]["data"], dtype=np.float32).reshape(response[0]["shape"])
    except (ValueError, KeyError, IndexError, TypeError):
        return  # binary-encoded or non-V2 payloads are forwarded but not sampled
    metrics.sampled_rows.labels(model=model).inc(window.add(inputs, outputs))


def run(upstream: str, port: int, app: Any = None, **options: Any) -> None:
    """Serve the sidecar (or an ``app`` made by :func:`create_sidecar`) with uvicorn (``pruneops sidecar``)."""
    import uvicorn

    app = app if app is not None else create_sidecar(upstream, **options)
    uvicorn.run(app, host="0.0.0.0", port=port, log_level="warning")
