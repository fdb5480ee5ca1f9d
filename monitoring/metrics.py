"""Every Prometheus metric pruneops exports, declared in one place.

Names follow Prometheus conventions: prefix ``pruneops_``, base units, ``_total`` for
counters, ``_seconds``/``_bytes`` suffixes. Labels are ``model``, ``version``, ``alias``
(and ``code``/``reason`` where said), never unbounded values: the sidecar labels a request
with the version the server says it served, or ``unknown``. Each group takes a
``registry`` so that tests build a fresh ``CollectorRegistry`` and read values with
``get_sample_value``.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> m = ServerMetrics(registry)
>>> m.load_failures.labels(model="digits").inc()
>>> registry.get_sample_value("pruneops_model_load_failures_total", {"model": "digits"})
1.0
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets from 0.5 ms to 10 s: pruned CPU models answer in well under a millisecond.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


class RequestMetrics:
    """What the sidecar records about the traffic it forwards."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ["model", "version", "alias"]
        self.duration = Histogram(
            "pruneops_request_duration_seconds",
            "Inference request latency through the sidecar, by the version that served it.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "pruneops_requests_total", "Requests forwarded, by HTTP status code.", [*labels, "code"], registry=registry
        )
        self.in_flight = Gauge("pruneops_requests_in_flight", "Requests being forwarded now.", registry=registry)
        self.rejected = Counter(
            "pruneops_requests_rejected_total",
            "Requests the sidecar answered itself (overload 503, too large 413, upstream 502/504).",
            ["reason"],
            registry=registry,
        )
        self.request_bytes = Histogram(
            "pruneops_request_size_bytes", "Request body sizes.", buckets=SIZE_BUCKETS, registry=registry
        )
        self.response_bytes = Histogram(
            "pruneops_response_size_bytes", "Response body sizes.", buckets=SIZE_BUCKETS, registry=registry
        )
        self.sampled_rows = Counter(
            "pruneops_sampled_rows_total", "Input rows copied into the drift window.", ["model"], registry=registry
        )


class ServerMetrics:
    """What the model server records about the versions it loads and serves."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.load_failures = Counter(
            "pruneops_model_load_failures_total",
            "Versions that failed to load, warm up or pass the smoke inference (the old one kept serving).",
            ["model"],
            registry=registry,
        )
        self.swaps = Counter(
            "pruneops_model_swaps_total", "Hot swaps to a new version.", ["model", "alias"], registry=registry
        )
        self.model_info = Gauge(
            "pruneops_model_info",
            "1 for each version being served, with its pruning lineage.",
            ["model", "alias", "version", "method", "pattern", "sparsity"],
            registry=registry,
        )
        self.shadow_agreement = Gauge(
            "pruneops_shadow_agreement_ratio",
            "Share of mirrored requests where the challenger's top class matched the champion's.",
            ["model", "version"],
            registry=registry,
        )
        self.shadow_requests = Counter(
            "pruneops_shadow_requests_total",
            "Requests mirrored to the challenger.",
            ["model", "version"],
            registry=registry,
        )
