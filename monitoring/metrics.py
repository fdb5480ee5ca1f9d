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
>>> m.load_failures.labels(model="digits", reason="integrity").inc()
>>> registry.get_sample_value("pruneops_model_load_failures_total", {"model": "digits", "reason": "integrity"})
1.0
"""

from __future__ import annotations

import contextlib

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from pruneops.monitoring.loop_metrics import LoopCounter, LoopHistogram

#: HTTP statuses of an inference that are the server's fault and feed the rollback signal. Client
#: errors (4xx), 501 and the sidecar's own overload 503 never do. The rules and the controller use
#: :data:`SERVER_FAULT_REGEX`; a test keeps monitoring/prometheus/rules.yaml in line with it.
SERVER_FAULT_CODES = ("500", "502", "503", "504")
SERVER_FAULT_REGEX = "|".join(SERVER_FAULT_CODES)

# Latency buckets from 0.5 ms to 10 s: pruned CPU models answer in well under a millisecond.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


#: Every reason the sidecar refuses a request or a connection itself.
REJECTED_REASONS = ("overloaded", "too_large", "route", "upstream_timeout", "upstream_unreachable",
                    "upstream_invalid", "connections", "buffer_budget", "header_timeout", "body_timeout")  # fmt: skip


class RequestMetrics:
    """What the sidecar records about the traffic it forwards.

    The per-request series (duration, requests, sizes) are :mod:`pruneops.monitoring.loop_metrics`
    ones, without a lock per update: update them only from the sidecar's event loop.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ["model", "version", "alias"]
        self.duration = LoopHistogram(
            "pruneops_request_duration_seconds",
            "Inference request latency through the sidecar, by the version that served it.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests = LoopCounter(
            "pruneops_requests_total", "Requests forwarded, by HTTP status code.", [*labels, "code"], registry=registry
        )
        self.in_flight = Gauge("pruneops_requests_in_flight", "Requests being forwarded now.", registry=registry)
        self.rejected = Counter(
            "pruneops_requests_rejected_total",
            "Requests the sidecar answered itself (overload 503, too large 413, unknown route 404/405, "
            "upstream 502/504, slow or excess connections).",
            ["reason"],
            registry=registry,
        )
        for reason in REJECTED_REASONS:
            self.rejected.labels(reason=reason)  # exported at 0 from the start, so rates exist
        self.request_bytes = LoopHistogram(
            "pruneops_request_size_bytes", "Request body sizes.", buckets=SIZE_BUCKETS, registry=registry
        )
        self.response_bytes = LoopHistogram(
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
            "Versions refused (once each; the old one kept serving), by reason: untrusted_code, integrity, "
            "smoke_test, runtime_unavailable, invalid_model, registry (tried again), error.",
            ["model", "reason"],
            registry=registry,
        )
        self.restores = Counter(
            "pruneops_model_restores_total",
            "Times the served model was missing from the server's repository and was put back.",
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


class DriftMetrics:
    """What the drift worker exports about the sampled window against the reference sample."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ["model", "version"]
        self.share = Gauge(
            "pruneops_drift_share", "Share of drift features Evidently found drifted.", labels, registry=registry
        )
        self.drifted = Gauge(
            "pruneops_drifted_features", "Number of drift features found drifted.", labels, registry=registry
        )
        self.feature_score = Gauge(
            "pruneops_feature_drift_score",
            "Evidently's drift score per feature (its p-value or distance; bounded set of features).",
            [*labels, "feature"],
            registry=registry,
        )
        self.prediction_score = Gauge(
            "pruneops_prediction_drift_score",
            "Drift score of the predicted class against the reference's predictions.",
            labels,
            registry=registry,
        )
        self.window_rows = Gauge(
            "pruneops_drift_window_rows", "Rows in the window the last drift used.", labels, registry=registry
        )
        self.seconds = Histogram(
            "pruneops_drift_computation_seconds",
            "Time to compute drift over the window.",
            ["model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.errors = Counter(
            "pruneops_drift_errors_total", "Drift computations that failed (logged).", ["model"], registry=registry
        )

    def forget(self, model: str, version: str) -> None:
        """Drop one version's drift series (after the server swapped to another)."""
        for gauge in (self.share, self.drifted, self.prediction_score, self.window_rows):
            with contextlib.suppress(KeyError):
                gauge.remove(model, version)
        for labels in [s.labels for m in self.feature_score.collect() for s in m.samples]:
            if labels.get("model") == model and labels.get("version") == version:
                with contextlib.suppress(KeyError):
                    self.feature_score.remove(model, version, labels["feature"])


class ControllerMetrics:
    """What the rollout controller decides, and the registry state the dashboards show."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.promotions = Counter(
            "pruneops_promotions_total", "Challengers promoted by analysis.", ["model", "reason"], registry=registry
        )
        self.rollbacks = Counter(
            "pruneops_rollbacks_total", "Rollbacks to the previous version, by alert name.", ["model", "reason"],
            registry=registry,
        )  # fmt: skip
        self.rejections = Counter(
            "pruneops_rejections_total", "Challengers rejected by analysis.", ["model"], registry=registry
        )
        self.analyses = Counter(
            "pruneops_analysis_runs_total", "Analysis runs by result.", ["model", "result"], registry=registry
        )
        self.errors = Counter(
            "pruneops_controller_errors_total",
            "Inputs the controller could not act on (unreachable Prometheus, bad or unauthorised webhooks).",
            ["reason"],
            registry=registry,
        )
        self.ignored_alerts = Counter(
            "pruneops_ignored_alerts_total", "Alerts that needed no action.", ["model", "reason"], registry=registry
        )
        self.alias_info = Gauge(
            "pruneops_alias_info", "1 for the version each registry alias points at.", ["model", "alias", "version"],
            registry=registry,
        )  # fmt: skip
        self.champion_version = Gauge(
            "pruneops_champion_version",
            "The champion's version number; changes() over it marks promotions and rollbacks.",
            ["model"],
            registry=registry,
        )
        self._figures = {
            figure: Gauge(
                f"pruneops_version_{figure}",
                f"The registered version's {figure.replace('_', ' ')} (registry tag pruneops.{figure}).",
                ["model", "version"],
                registry=registry,
            )
            for figure in ("sparsity", "accuracy", "accuracy_drop", "speedup")
        }

    def version_figure(self, figure: str) -> Gauge:
        """The gauge of one per-version registry figure, e.g. ``sparsity``."""
        return self._figures[figure]
