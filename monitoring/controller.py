"""The rollout controller: promote a challenger on live evidence, roll the champion back on alerts.

Analysis, in the manner of Argo Rollouts' AnalysisRuns: every ``interval`` seconds, for each
watched model with a ``challenger`` alias, query Prometheus for the challenger and the
champion over the challenger's ``RolloutSpec.window`` (the recipe's ``rollout`` section,
recorded on the version as the ``pruneops.rollout`` tag) and compare:

- p99 latency ratio (challenger / champion) <= ``max_latency_ratio``;
- challenger server-fault ratio (500, 502, 503, 504) <= ``max_error_ratio``;
- the model's input drift share <= ``max_drift_share``;
- shadow agreement >= ``min_shadow_agreement`` when the server shadows the challenger.

Fewer than ``min_samples`` challenger requests, or any series missing, makes the analysis
*inconclusive*: it counts neither way, so missing data never promotes. ``successes``
passes in a row promote (``Registry.promote``: the server follows the alias); more than
``failure_limit`` failures reject: the challenger alias is removed and the version is tagged
``rollout=rejected`` with the reason.

Rollback: Alertmanager posts firing alerts to ``POST /alerts`` (``Authorization: Bearer
TOKEN``). An alert labelled ``action="rollback"`` for a model's *current champion version*
rolls the model back to ``previous``. An alert for an older version (Alertmanager repeats
until the alert resolves) or an unknown model changes nothing and is logged and counted.

Every decision is an alias change recorded in the registry with its reason, and counted:
``pruneops_promotions_total``, ``pruneops_rollbacks_total``, ``pruneops_rejections_total``,
``pruneops_analysis_runs_total{result}``, ``pruneops_controller_errors_total{reason}``. The
controller's ``/metrics`` also exports which version holds each alias and the registry's
per-version pruning figures, which the dashboards read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from pruneops.errors import NotFoundError, PruneopsError
from pruneops.monitoring.metrics import SERVER_FAULT_REGEX, ControllerMetrics
from pruneops.monitoring.prom import PrometheusUnavailable, PromQuery
from pruneops.recipe import RolloutSpec
from pruneops.registry import CHALLENGER, CHAMPION, Registry
from pruneops.webhooks import bearer_matches

log = logging.getLogger("pruneops.controller")

TOKEN_ENV = "PRUNEOPS_CONTROLLER_TOKEN"
#: Registry figures exported per version for the pruning dashboard (tag -> metric suffix).
VERSION_FIGURES = ("sparsity", "accuracy", "accuracy_drop", "speedup")


@dataclass(frozen=True)
class Analysis:
    """One comparison of challenger and champion: ``passed``, ``failed`` or ``inconclusive``."""

    result: str
    reasons: tuple[str, ...]
    figures: dict[str, float | None]


def analyse(
    prom: PromQuery, model: str, champion: str, challenger: str, spec: RolloutSpec, namespace: str | None = None
) -> Analysis:
    """Query Prometheus and judge the challenger against ``spec``; with ``namespace``, only
    that install's series count (another install may serve a model of the same name).

    ``prom`` is anything with PromQuery's ``scalar(query)``; here, a Prometheus whose challenger
    served 500 requests with no fault and a p99 three times the champion's:

    >>> class Recorded:
    ...     def scalar(self, query: str) -> float | None:
    ...         if query.startswith("histogram_quantile"):  # p99, seconds
    ...             return 0.030 if 'version="2"' in query else 0.010
    ...         if "pruneops_drift_share" in query:
    ...             return 0.0
    ...         if "pruneops_requests_total" in query and "code=~" not in query:
    ...             return 500.0  # the challenger's requests; no series of server faults
    ...         return None
    >>> verdict = analyse(Recorded(), "digits", "1", "2", RolloutSpec(max_latency_ratio=1.5))
    >>> verdict.result, verdict.reasons
    ('failed', ('p99 latency ratio 3.00 > 1.5 (+20.0 ms)',))
    """
    w = spec.window
    install = f',namespace="{namespace}"' if namespace else ""
    challenger_sel = f'model="{model}",version="{challenger}"{install}'
    errors_sel = challenger_sel + f',code=~"{SERVER_FAULT_REGEX}"'

    def p99(version: str) -> float | None:
        buckets = f'pruneops_request_duration_seconds_bucket{{model="{model}",version="{version}"{install}}}'
        return prom.scalar(f"histogram_quantile(0.99, sum by (le) (rate({buckets}[{w}])))")

    samples = prom.scalar(f"sum(increase(pruneops_requests_total{{{challenger_sel}}}[{w}]))")
    errors = prom.scalar(f"sum(increase(pruneops_requests_total{{{errors_sel}}}[{w}]))")
    ours, theirs = p99(challenger), p99(champion)
    drift = prom.scalar(f'max(pruneops_drift_share{{model="{model}"{install}}})')
    agreement = prom.scalar(f"max(pruneops_shadow_agreement_ratio{{{challenger_sel}}})")
    error_ratio = (errors or 0.0) / samples if samples else None
    figures: dict[str, float | None] = {
        "samples": samples,
        "challenger_p99_s": ours,
        "champion_p99_s": theirs,
        "error_ratio": error_ratio,
        "drift_share": drift,
        "shadow_agreement": agreement,
    }
    if samples is None or samples < spec.min_samples:
        found = f"{samples or 0:.0f} challenger requests in {w}, need {spec.min_samples}"
        return Analysis("inconclusive", (found,), figures)
    if ours is None or theirs is None or drift is None or error_ratio is None:
        missing = [k for k in ("challenger_p99_s", "champion_p99_s", "drift_share") if figures[k] is None]
        return Analysis("inconclusive", (f"no data for {', '.join(missing)}",), figures)
    reasons = []
    ratio = figures["latency_ratio"] = ours / max(theirs, 1e-9)
    excess_ms = (ours - theirs) * 1000
    if ratio > spec.max_latency_ratio and excess_ms > spec.min_latency_excess_ms:
        reasons.append(f"p99 latency ratio {ratio:.2f} > {spec.max_latency_ratio} ({excess_ms:+.1f} ms)")
    if error_ratio > spec.max_error_ratio:
        reasons.append(f"error ratio {error_ratio:.3f} > {spec.max_error_ratio}")
    if drift > spec.max_drift_share:
        reasons.append(f"drift share {drift:.2f} > {spec.max_drift_share}")
    if agreement is not None and agreement < spec.min_shadow_agreement:
        reasons.append(f"shadow agreement {agreement:.3f} < {spec.min_shadow_agreement}")
    return Analysis("failed" if reasons else "passed", tuple(reasons), figures)


@dataclass
class Controller:
    """Analysis loop and alert handling for ``models``; see the module docstring."""

    models: list[str]
    prom: PromQuery
    registry: Registry = field(default_factory=Registry)
    metrics_registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    interval: float = 10.0
    default_spec: RolloutSpec = field(default_factory=RolloutSpec)
    # The Kubernetes namespace of this install: analysis reads only its series, and an alert
    # from another namespace (another install serving a model of the same name) is ignored.
    namespace: str | None = None
    # challenger version -> (passes in a row, failures)
    _tally: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _exported_aliases: dict[str, dict[str, str]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.metrics = ControllerMetrics(self.metrics_registry)

    # ---------------------------------------------------------------- analysis

    def spec_for(self, model: str, version: str) -> RolloutSpec:
        """The version's recorded rollout thresholds, or the controller's defaults."""
        recorded = self.registry.version(model, version).tag("rollout")
        return RolloutSpec.model_validate_json(recorded) if recorded else self.default_spec

    def analyse_once(self, model: str) -> str:
        """Run one analysis step for ``model``; returns what happened (for logs and tests)."""
        with self._lock:
            try:
                # An alias moved in the MLflow UI is recorded within one interval of the move.
                events, aliases = self.registry.sync(model)
                for event in events:
                    log.warning("%s: %s %s v%s -> v%s (%s)", model, event.action, event.alias,
                                event.from_version, event.version, event.why)  # fmt: skip
            except PruneopsError as err:
                return self._error(model, "registry", f"cannot read aliases: {err}")
            self._export_registry(model, aliases)
            champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
            if champion is None or challenger is None:
                return "no challenger"
            spec = self.spec_for(model, challenger)
            try:
                analysis = analyse(self.prom, model, champion, challenger, spec, self.namespace)
            except PrometheusUnavailable as err:
                return self._error(model, "prometheus", str(err))
            self.metrics.analyses.labels(model=model, result=analysis.result).inc()
            passes, failures = self._tally.get((model, challenger), (0, 0))
            if analysis.result == "passed":
                passes += 1
            elif analysis.result == "failed":
                passes, failures = 0, failures + 1
            self._tally[(model, challenger)] = (passes, failures)
            log.info("analysis %s v%s vs v%s: %s %s (%d/%d passes, %d failures) %s", model, challenger, champion,
                     analysis.result, "; ".join(analysis.reasons), passes, spec.successes, failures,
                     json.dumps(analysis.figures))  # fmt: skip
            if passes >= spec.successes:
                why = f"analysis passed {passes} times: " + json.dumps(analysis.figures, default=str)
                self.registry.promote(model, challenger, why=why[:500])
                self.metrics.promotions.labels(model=model, reason="analysis_passed").inc()
                return f"promoted v{challenger}"
            if failures > spec.failure_limit:
                why = f"analysis failed {failures} times: " + "; ".join(analysis.reasons)
                self.registry.set_tags(model, challenger, {"rollout": "rejected", "rollout_reason": why[:500]})
                self.registry.remove_alias(model, CHALLENGER, why=why[:500])
                self.metrics.rejections.labels(model=model).inc()
                return f"rejected v{challenger}"
            return analysis.result

    def run(self) -> threading.Thread:
        """Start the analysis loop in a daemon thread."""

        def loop() -> None:
            while not self._stop.wait(self.interval):
                for model in self.models:
                    self.analyse_once(model)

        thread = threading.Thread(target=loop, name="controller-analysis", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    # ---------------------------------------------------------------- alerts

    def handle_alert(self, alert: dict[str, Any]) -> str:
        """Act on one Alertmanager alert; returns what happened. Never raises for bad alerts."""
        labels = alert.get("labels") or {}
        name, model, version = labels.get("alertname", "?"), labels.get("model"), labels.get("version")
        if alert.get("status") != "firing" or labels.get("action") != "rollback":
            return f"{name}: no action (status {alert.get('status')}, action {labels.get('action')})"
        if model not in self.models:
            return self._error(model, "unknown_model", f"alert {name} for model {model!r}, which is not watched")
        if self.namespace and labels.get("namespace") != self.namespace:
            self.metrics.ignored_alerts.labels(model=model, reason="other_install").inc()
            return f"{name}: from namespace {labels.get('namespace')!r}, not this install's ({self.namespace}); ignored"
        with self._lock:
            try:
                champion = self.registry.aliases(model).get(CHAMPION)
                if version is not None and version != champion:
                    self.metrics.ignored_alerts.labels(model=model, reason="not_champion").inc()
                    return f"{name}: v{version} is not the champion (v{champion}); nothing to roll back"
                summary = (alert.get("annotations") or {}).get("summary", "")
                change = self.registry.rollback(model, why=f"alert {name}: {summary}"[:500])
            except NotFoundError as err:
                return self._error(model, "no_rollback_target", f"alert {name}: {err}")
            except PruneopsError as err:
                return self._error(model, "registry", f"alert {name}: {err}")
        if change.changed:
            self.metrics.rollbacks.labels(model=model, reason=name).inc()
            log.warning("rolled back %s: %s (alert %s)", model, change.message, name)
        return f"{name}: {change.message}"

    def _error(self, model: str | None, reason: str, message: str) -> str:
        log.error("%s: %s", model or "?", message)
        self.metrics.errors.labels(reason=reason).inc()
        return message

    # ---------------------------------------------------------------- registry figures

    def _export_registry(self, model: str, aliases: dict[str, str]) -> None:
        for alias, version in self._exported_aliases.get(model, {}).items():  # this model's old state only
            if aliases.get(alias) != version:
                self.metrics.alias_info.remove(model, alias, version)
        for alias, version in aliases.items():
            self.metrics.alias_info.labels(model=model, alias=alias, version=version).set(1)
        self._exported_aliases[model] = dict(aliases)
        if CHAMPION in aliases:
            self.metrics.champion_version.labels(model=model).set(float(aliases[CHAMPION]))
        for info in self.registry.versions(model)[-20:]:  # the 20 newest keep the series bounded
            for figure in VERSION_FIGURES:
                value = info.tag(figure)
                if value not in (None, ""):
                    self.metrics.version_figure(figure).labels(model=model, version=info.version).set(float(value))


def create_app(controller: Controller, token: str) -> Any:
    """The controller's HTTP API (Starlette): ``POST /alerts``, ``GET /metrics``, ``GET /healthz``.

    Bodies are capped at 1 MiB before anything reads them, and the bearer token is checked
    before the body is parsed. Alertmanager sends no delivery id, so a repeated delivery is
    not refused; it is harmless, because a rollback consumes ``previous`` and an alert for a
    version that is no longer champion changes nothing.

    >>> import tempfile
    >>> from starlette.testclient import TestClient
    >>> from pruneops.modelio import build_model
    >>> from pruneops.onboard import register_source
    >>> from pruneops.tasks.digits import task
    >>> registry = Registry("sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    >>> path = "pruneops.tasks.digits:task"
    >>> for _ in range(2):  # v1, the champion, and v2
    ...     _ = register_source(registry, "digits", build_model(task.arch), task.arch, task, path)
    >>> _ = registry.promote("digits", "2", why="example")
    >>> controller = Controller(["digits"], PromQuery("http://127.0.0.1:9090"), registry=registry)
    >>> client = TestClient(create_app(controller, token="t0ken"))
    >>> alert = {"status": "firing", "labels": {"alertname": "LatencyRegression", "model": "digits", "version": "2",
    ...                                          "action": "rollback"}}
    >>> client.post("/alerts", json={"alerts": [alert]}).status_code  # no bearer token
    401
    >>> client.post("/alerts", json={"alerts": [alert]}, headers={"Authorization": "Bearer t0ken"}).json()
    {'outcomes': ['LatencyRegression: champion v2 -> v1']}
    >>> registry.aliases("digits")["champion"]
    '1'
    """
    from prometheus_client import generate_latest
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from pruneops.asgi import WEBHOOK_BODY_BYTES, BodyLimit

    if not token:
        raise PruneopsError(f"the controller needs a webhook token; set {TOKEN_ENV}")

    async def alerts(request: Request) -> JSONResponse:
        if not bearer_matches(request.headers, token):
            controller.metrics.errors.labels(reason="unauthorized").inc()
            log.error("alert webhook refused: missing or wrong bearer token")
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        try:
            items = json.loads(await request.body())["alerts"]
        except (ValueError, KeyError, TypeError):
            items = None
        if not isinstance(items, list):
            controller.metrics.errors.labels(reason="bad_payload").inc()
            return JSONResponse({"error": "expected Alertmanager's webhook JSON with an 'alerts' list"}, 400)
        outcomes = [await asyncio.to_thread(controller.handle_alert, a) for a in items if isinstance(a, dict)]
        return JSONResponse({"outcomes": outcomes})

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(controller.metrics_registry), media_type="text/plain; version=0.0.4")

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "models": controller.models})

    app = Starlette(
        routes=[
            Route("/alerts", alerts, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    return BodyLimit(app, limit=WEBHOOK_BODY_BYTES)
