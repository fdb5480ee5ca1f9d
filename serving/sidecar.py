"""The sidecar: a reverse proxy in front of any V2 model server, measuring what passes through.

It forwards the public V2 routes (:mod:`pruneops.serving.routes`: health, metadata, ready, infer) to
the model server and answers everything else itself (404, or 405 for a wrong method), so no
anonymous request reaches the server's other endpoints. It records, per inference request,
``pruneops_request_duration_seconds`` and ``pruneops_requests_total{code}`` labelled with
the model, version and alias the server reports in ``x-pruneops-version`` and
``x-pruneops-alias``; error replies, which carry no such headers, get the version that
model last served, and a model the server never confirmed is ``unknown`` (labels stay
bounded). It also records in-flight requests and payload sizes, and serves ``/metrics``.
Every ``sample_every``-th successful inference has its decoded input rows (and output rows)
handed to a ``sink``: by default a bounded window that the sidecar's own drift worker reads,
or, with ``pruneops sidecar --drift-service URL``, a :class:`pruneops.serving.drift_client.DriftShipper`
that sends them to the drift service, which computes drift over every replica's samples. JSON
bodies and V2's binary tensor extension are both decoded (:mod:`pruneops.serving.v2tensors`).

Protection: a body over ``max_body`` gets 413; past ``max_in_flight`` concurrent requests
it answers 503 with ``Retry-After`` instead of queueing; a server slower than ``timeout``
gets 504; an unreachable one, or one whose reply is not HTTP, gets 502. All of these
answer ``{"error": ...}``. Bodies pass through as bytes (no decompression), so
content-encoding travels with them.

Error accounting: only server faults feed the rollback signal (:data:`SERVER_FAULT_CODES`:
500, 502, 503 and 504 on an inference). The 502 and 504 the sidecar answers for a failing
server count against the version that model last served; refusals that protect the pod
from its clients (413, the overload 503, unknown routes) are counted only in
``pruneops_requests_rejected_total{reason}``, and client errors keep their 4xx code.

The HTTP plumbing is :mod:`pruneops.serving.http1`; this module is the policy.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pruneops.asgi import MAX_BODY_BYTES
from pruneops.monitoring.loop_metrics import CounterChild, HistogramChild
from pruneops.monitoring.metrics import RequestMetrics
from pruneops.monitoring.window import SampleWindow
from pruneops.serving import routes
from pruneops.serving.http1 import (
    ConnectionLimits,
    Later,
    Reply,
    Request,
    UpstreamPool,
    UpstreamUnreachable,
    error_reply,
    start_server,
)
from pruneops.serving.v2tensors import first_tensor

log = logging.getLogger(__name__)
INFER_HEADER_LENGTH = b"inference-header-content-length"  # V2's binary extension: not JSON
#: Sampled pairs up to this size are decoded on the event loop (tens of microseconds), larger ones in a thread.
INLINE_SAMPLE_BYTES = 64 * 1024
METRICS_ROUTE = "metrics"  # the sidecar's own GET /metrics
ROUTE_CACHE_SIZE = 1024  # (method, target) pairs whose route is remembered
SAMPLE_BATCH = 32  # small sampled pairs decoded together, after their replies went out
SAMPLE_FLUSH_S = 2.0  # at low traffic, what waits is decoded within this many seconds


#: Where sampled rows go: ``sink((model, version, alias), inputs, outputs)`` returns the rows taken.
Sink = Callable[[tuple[str, str, str], np.ndarray, "np.ndarray | None"], int]


class Sidecar:
    """The proxy: forwards to ``upstream`` (``http://host:port``), measures, samples, protects.

    Built on :mod:`pruneops.serving.http1` (httptools on asyncio protocols), not an ASGI framework:
    see that module for why. ``window``, ``registry`` and ``last_served`` are what the drift
    worker reads; ``sink`` (``sink(labels, inputs, outputs) -> rows``), when given, receives the
    sampled rows instead of the window, labelled (model, version, alias).

    >>> sidecar = Sidecar("http://127.0.0.1:8080", max_in_flight=8)
    >>> sidecar.window.max_rows, sidecar.last_served
    (5000, {})
    """

    def __init__(
        self,
        upstream: str,
        registry: CollectorRegistry | None = None,
        window: SampleWindow | None = None,
        max_in_flight: int = 64,
        max_body: int = MAX_BODY_BYTES,
        timeout: float = 10.0,
        sample_every: int = 10,
        limits: ConnectionLimits | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # Connections, buffered bytes and header/body deadlines: what clients can make it hold.
        self.limits = limits if limits is not None else ConnectionLimits()
        self.metrics = RequestMetrics(self.registry)
        self.window = window if window is not None else SampleWindow()
        self.sink: Sink = sink if sink is not None else lambda _labels, ins, outs: self.window.add(ins, outs)
        self.upstream = UpstreamPool(upstream, timeout=timeout, max_idle=max_in_flight)
        self.max_in_flight, self.max_body = max_in_flight, max_body
        self.timeout, self.sample_every = timeout, sample_every
        self.in_flight = 0
        # Read when scraped, not updated per request: two fewer locked updates on the hot path.
        self.metrics.in_flight.set_function(lambda: self.in_flight)
        self.forwarded = 0
        # model -> (version, alias) it last served; only names the server confirmed, so bounded.
        self.last_served: dict[str, tuple[str, str]] = {}
        # The unlabelled size series, looked up once.
        self._request_bytes = self.metrics.request_bytes.labels()
        self._response_bytes = self.metrics.response_bytes.labels()
        self._routes: dict[tuple[str, bytes], tuple[str | None, str | None]] = {}
        self._pending_samples: list[tuple[tuple[str, str, str], Request, Reply]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._labelled: dict[tuple[tuple[str, str, str], int], tuple[HistogramChild, CounterChild]] = {}

    def handle(self, request: Request) -> Reply | Later:
        """Answer one request: ``GET /metrics`` and refusals at once, the rest :class:`Later` when forwarded.

        >>> sidecar = Sidecar("http://127.0.0.1:8080", max_body=10)
        >>> sidecar.handle(Request("POST", b"/v2/models/m/infer", [], b"", oversized=True)).status
        413
        """
        route, model = self._route(request.method, request.target)
        if route == METRICS_ROUTE:
            return Reply(200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], generate_latest(self.registry))
        if route is None:
            return self._refuse(404, "route", f"no route {request.path[:200]}; this endpoint answers V2 inference only")
        if route == routes.METHOD_NOT_ALLOWED:
            return self._refuse(405, "route", f"{request.method} is not allowed on {request.path[:200]}")
        if request.oversized:
            return self._refuse(413, "too_large", f"request body over {self.max_body} bytes")
        if self.in_flight >= self.max_in_flight:
            return self._refuse(503, "overloaded", f"more than {self.max_in_flight} requests in flight; retry", True)
        return self._forward(request, model)

    def _route(self, method: str, target: bytes) -> tuple[str | None, str | None]:
        """The route's name (None: no route) and, for an inference, the model's name; remembered per target.

        Clients repeat a handful of targets, so matching is remembered; anonymous ones can send
        any number, so what is remembered is bounded (:data:`ROUTE_CACHE_SIZE`, then forgotten).

        >>> Sidecar("http://127.0.0.1:8080")._route("POST", b"/v2/models/digits/infer")
        ('infer', 'digits')
        """
        found = self._routes.get((method, target))
        if found is None:
            path = target.partition(b"?")[0].decode("latin-1")
            infer = routes.INFER_PATH.match(path) if method == "POST" else None
            if infer is not None:  # nearly all the traffic: one pattern, before the route table
                found = ("infer", infer["model"])
            else:
                found = (METRICS_ROUTE if method == "GET" and path == "/metrics" else routes.match(method, path), None)
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[(method, target)] = found
        return found

    def _forward(self, request: Request, model: str | None) -> Later:
        """Forward ``request``; for an inference (``model`` is its model's name), measure and sample it.

        No coroutine and no future: the upstream pool calls back from its connection's read,
        and the reply goes on to the client's connection in that same call.
        """
        replied = Later()
        started = time.perf_counter()
        body, headers = request.body, request.headers
        self._request_bytes.observe(len(body))
        if body and request.header(b"content-type") is None and request.header(INFER_HEADER_LENGTH) is None:
            headers = [*headers, (b"content-type", b"application/json")]  # V2's default encoding

        def done(outcome: Reply | Exception) -> None:
            self.in_flight -= 1
            try:
                reply = self._measure(request, model, outcome, time.perf_counter() - started)
            except Exception:  # a bug here is one 500, not a client left waiting
                log.exception("measuring %s %r failed", request.method, request.target)
                reply = error_reply(500, "the sidecar failed on this request; see its log")
            replied.resolve(reply)  # goes nowhere if the client went away; the answer is still counted

        self.in_flight += 1
        try:
            self.upstream.forward(request.method, request.target, headers, body, done)
        except BaseException:
            self.in_flight -= 1
            raise
        return replied

    def _measure(self, request: Request, model: str | None, outcome: Reply | Exception, elapsed: float) -> Reply:
        """The reply to send for an upstream outcome, recorded in the metrics (and sampled)."""
        if isinstance(outcome, Reply):
            reply = outcome
        elif isinstance(outcome, TimeoutError):
            reply = self._refuse(504, "upstream_timeout", f"model server did not answer within {self.timeout:g}s")
        elif isinstance(outcome, UpstreamUnreachable):
            reply = self._refuse(502, "upstream_unreachable", f"model server unreachable: {outcome}")
        else:  # UpstreamInvalidReply; nothing else is raised upstream, and were it, the server did not answer properly
            reply = self._refuse(502, "upstream_invalid", f"model server sent an invalid reply: {outcome}")
        if model is not None:
            # A 502/504 made here carries no version header: it counts against the version
            # that model last served, which is what failed to answer.
            labels = _labels(model, reply, self.last_served)
            duration, requests = self._labelled.get((labels, reply.status)) or self._series(labels, reply.status)
            duration.observe(elapsed)
            requests.inc()
            self.forwarded += 1
            if reply.status == 200 and self.forwarded % self.sample_every == 0:
                self._sample(labels, request, reply)
        self._response_bytes.observe(len(reply.body))
        return reply

    def _sample(self, labels: tuple[str, str, str], request: Request, reply: Reply) -> None:
        """Queue one request/reply pair for the sink: small ones decoded in batches on the loop, large ones in a thread.

        A thread hop per sample (queue, wake-up, the result posted back to the loop) cost
        more CPU than decoding a small JSON body. Decoding :data:`SAMPLE_BATCH` pairs in one
        pass, after a reply is sent, costs less than one at a time: the decoder's code is
        warm for all but the first. At low traffic a timer sends what waits within
        :data:`SAMPLE_FLUSH_S`. A large body is decoded in a thread, not awaited.
        """
        if len(request.body) + len(reply.body) > INLINE_SAMPLE_BYTES:
            asyncio.get_running_loop().run_in_executor(None, _sample, self.sink, self.metrics, labels, request, reply)
            return
        self._pending_samples.append((labels, request, reply))
        if len(self._pending_samples) >= SAMPLE_BATCH:
            self.flush_samples()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(SAMPLE_FLUSH_S, self.flush_samples)

    def flush_samples(self) -> int:
        """Decode the sampled pairs that wait into the sink now; returns how many pairs were decoded.

        >>> Sidecar("http://127.0.0.1:8080").flush_samples()
        0
        """
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        pending, self._pending_samples = self._pending_samples, []
        rows: dict[str, int] = {}  # per model: one counter update per batch, not per pair
        for labels, request, reply in pending:
            try:
                rows[labels[0]] = rows.get(labels[0], 0) + _decode(self.sink, labels, request, reply)
            except Exception:  # a body the sink cannot take is not sampled; the replies went out long ago
                log.warning("could not sample an inference of %s", labels[0], exc_info=True)
        for model, count in rows.items():
            self.metrics.sampled_rows.labels(model=model).inc(count)
        return len(pending)

    def _series(self, labels: tuple[str, str, str], status: int) -> tuple[HistogramChild, CounterChild]:
        """The labelled duration and request series, remembered: ``labels()`` costs more than a dict."""
        series = self._labelled[(labels, status)] = (
            self.metrics.duration.labels(*labels),
            self.metrics.requests.labels(*labels, str(status)),
        )
        return series

    def _refuse(self, status: int, reason: str, message: str, retry: bool = False) -> Reply:
        self.metrics.rejected.labels(reason=reason).inc()
        return error_reply(status, message, retry_after=1 if retry else None)

    async def start(self, host: str, port: int) -> asyncio.base_events.Server:
        """Listen on ``host:port``; the returned server runs until closed (port 0 picks a free one).

        >>> async def listen() -> int:
        ...     server = await Sidecar("http://127.0.0.1:8080").start("127.0.0.1", 0)
        ...     listening = len(server.sockets)
        ...     server.close()
        ...     return listening
        >>> asyncio.run(listen())
        1
        """
        return await start_server(
            self.handle,
            host,
            port,
            max_body=self.max_body,
            idle_timeout=self.limits.idle_timeout,
            limits=self.limits,
            on_refuse=lambda reason: self.metrics.rejected.labels(reason=reason).inc(),
            on_drained=_trim_heap,
        )

    async def serve(self, host: str, port: int, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then stop accepting and let requests in flight finish."""
        server = await self.start(host, port)
        await stop.wait()
        server.close()
        deadline = time.monotonic() + self.timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.flush_samples()
        await self.upstream.close()

    def run(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve on uvloop until SIGTERM or SIGINT (``pruneops sidecar``)."""
        import uvloop

        _return_large_buffers_to_os()

        async def main() -> None:
            # Everything loaded so far lives as long as the process: keep it out of the
            # collector's full passes, which would walk all of it each time, on the loop.
            gc.collect()
            gc.freeze()
            stop = asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(signum, stop.set)
            await self.serve(host, port, stop)

        uvloop.run(main())


@functools.cache
def _libc() -> Any:
    """glibc, for its allocator's settings; None elsewhere. Looked up once: ``find_library`` runs a subprocess."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _return_large_buffers_to_os() -> None:
    """Make glibc serve large buffers from mmap, so freeing one returns it to the OS.

    glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB):
    after the first multi-megabyte upload, later ones came from the heap, and 30 stalled
    7.5 MiB uploads left the process 50 MiB larger for good. A fixed threshold turns that off.
    """
    libc = _libc()
    if libc is not None:
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 128 * 1024)
        libc.mallopt(m_trim_threshold, 128 * 1024)


def _trim_heap() -> None:
    """Return the heap's free pages to the OS after a burst of large bodies (``malloc_trim``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def served_champion(last_served: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The (model, version) the server last answered as champion, else any it answered; None before traffic.

    >>> served_champion({"digits": ("3", "champion")})
    ('digits', '3')
    """
    for model, (version, alias) in list(last_served.items()):
        if alias == "champion":
            return model, version
    return next(((m, v) for m, (v, _a) in list(last_served.items())), None)


def _labels(model: str, reply: Reply, last_served: dict[str, tuple[str, str]]) -> tuple[str, str, str]:
    """Metric labels (model, version, alias) for one reply: what the server says it served.

    Error replies carry no version headers (the server's error handlers build them), so
    they are labelled with the version that model last served, which is what an error ratio
    by version needs. A model the server never confirmed is ``unknown``, so labels stay bounded.
    """
    version = reply.header(b"x-pruneops-version")
    if version is not None:
        served = last_served[model] = _served(version, reply.header(b"x-pruneops-alias") or b"unknown")
        return (model, *served)
    if model in last_served:
        return (model, *last_served[model])
    return ("unknown", "unknown", "unknown")


@functools.lru_cache(maxsize=256)  # the server's versions and aliases: a handful, decoded once each
def _served(version: bytes, alias: bytes) -> tuple[str, str]:
    return version.decode("latin-1"), alias.decode("latin-1")


def _sample(sink: Sink, metrics: RequestMetrics, labels: tuple[str, str, str], request: Request, reply: Reply) -> None:
    """Decode one pair into the sink and count its rows (in a thread, for a large body)."""
    metrics.sampled_rows.labels(model=labels[0]).inc(_decode(sink, labels, request, reply))


def _decode(sink: Sink, labels: tuple[str, str, str], request: Request, reply: Reply) -> int:
    """Decode a V2 request/response pair, JSON or binary extension, into the sink; returns the rows it took.

    A body that is not V2 is skipped (0 rows).
    """
    inputs = first_tensor(request.body, _header_length(request.header(INFER_HEADER_LENGTH)), "inputs")
    if inputs is None:
        return 0
    outputs = first_tensor(reply.body, _header_length(reply.header(INFER_HEADER_LENGTH)), "outputs")
    return sink(labels, inputs, outputs)


def _header_length(value: bytes | None) -> int | None:
    """The binary extension's JSON header length, or None for a plain JSON body (or a malformed length: -1)."""
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else -1
