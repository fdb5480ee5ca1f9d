"""The rollout controller against a real registry and a real Prometheus: decisions and bad input."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pruneops.errors import PruneopsError
from pruneops.modelio import save_model
from pruneops.monitoring.controller import Controller, create_app
from pruneops.monitoring.metrics import DriftMetrics, RequestMetrics
from pruneops.monitoring.prom import PromQuery
from pruneops.recipe import RolloutSpec
from pruneops.registry import Registry
from pruneops.tasks.digits import build, task
from tests.monitoring.conftest import LivePrometheus

TOKEN = "controller-token"
FAST_SPEC = RolloutSpec(successes=1, failure_limit=0, min_samples=20, window="30s")


def versions(registry: Registry, model: str, count: int) -> list[str]:
    """Register ``count`` small untrained digits models that passed their gate."""
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build(channels=(4, 4, 4), hidden=8)
        folder = save_model(tiny, Path(tmp) / "m", task.arch, probe=task.probe(tiny))
        for _ in range(count):
            tags = {"gate": "passed", "sparsity": "0.5", "speedup": "2.0", "accuracy": "0.9",
                    "rollout": FAST_SPEC.model_dump_json()}  # fmt: skip
            made.append(registry.register(model, folder, tags=tags).version)
    return made


@pytest.fixture
def registry() -> Registry:
    return Registry()


def controller_for(registry: Registry, prom: str, model: str = "digits") -> Controller:
    return Controller([model], PromQuery(prom, timeout=2), registry=registry)


def test_unreachable_prometheus_changes_nothing_and_is_counted(registry: Registry) -> None:
    v1, v2 = versions(registry, "digits", 2)
    registry.set_alias("digits", "champion", v1)
    registry.set_alias("digits", "challenger", v2)
    controller = controller_for(registry, "http://127.0.0.1:9")
    outcome = controller.analyse_once("digits")
    assert "unreachable" in outcome
    assert registry.aliases("digits") == {"champion": v1, "challenger": v2}
    errors = controller.metrics_registry.get_sample_value("pruneops_controller_errors_total", {"reason": "prometheus"})
    assert errors == 1


def test_no_data_is_inconclusive_and_never_promotes(registry: Registry, live_prometheus: LivePrometheus) -> None:
    v1, v2 = versions(registry, "nodata", 2)
    registry.set_alias("nodata", "champion", v1)
    registry.set_alias("nodata", "challenger", v2)
    controller = controller_for(registry, live_prometheus.url, "nodata")
    for _ in range(3):
        assert controller.analyse_once("nodata") == "inconclusive"
    assert registry.aliases("nodata") == {"champion": v1, "challenger": v2}
    assert controller.metrics_registry.get_sample_value(
        "pruneops_analysis_runs_total", {"model": "nodata", "result": "inconclusive"}
    ) == 3  # fmt: skip
    # the registry state the dashboards read is exported all the same
    values = controller.metrics_registry.get_sample_value
    assert values("pruneops_alias_info", {"model": "nodata", "alias": "challenger", "version": v2}) == 1
    assert values("pruneops_version_sparsity", {"model": "nodata", "version": v2}) == 0.5


def test_slow_challenger_is_rejected_and_fast_one_promoted(registry: Registry, live_prometheus: LivePrometheus) -> None:
    v1, slow, fast = versions(registry, "live", 3)
    registry.set_alias("live", "champion", v1)
    registry.set_alias("live", "challenger", slow)
    metrics = RequestMetrics(live_prometheus.exporter)
    DriftMetrics(live_prometheus.exporter).share.labels(model="live", version=v1).set(0.05)
    controller = controller_for(registry, live_prometheus.url, "live")

    def traffic(version: str, seconds: float) -> None:
        for _ in range(60):
            metrics.duration.labels(model="live", version=version, alias="x").observe(seconds)
            metrics.requests.labels(model="live", version=version, alias="x", code="200").inc()

    deadline = time.monotonic() + 40
    outcome = ""
    while time.monotonic() < deadline and not outcome.startswith("rejected"):
        traffic(v1, 0.002)
        traffic(slow, 0.2)
        time.sleep(1.5)
        outcome = controller.analyse_once("live")
    assert outcome == f"rejected v{slow}", outcome
    assert registry.aliases("live") == {"champion": v1}
    assert registry.version("live", slow).tag("rollout") == "rejected"
    assert "p99 latency ratio" in (registry.version("live", slow).tag("rollout_reason") or "")
    assert controller.metrics_registry.get_sample_value("pruneops_rejections_total", {"model": "live"}) == 1

    registry.set_alias("live", "challenger", fast)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and not outcome.startswith("promoted"):
        traffic(v1, 0.002)
        traffic(fast, 0.002)
        time.sleep(1.5)
        outcome = controller.analyse_once("live")
    assert outcome == f"promoted v{fast}", outcome
    assert registry.aliases("live") == {"champion": fast, "previous": v1}
    assert "analysis passed" in registry.history("live")[-1].why
    assert controller.metrics_registry.get_sample_value(
        "pruneops_promotions_total", {"model": "live", "reason": "analysis_passed"}
    ) == 1  # fmt: skip


def alert(model: str, version: str, status: str = "firing", action: str = "rollback") -> dict:
    return {
        "status": status,
        "labels": {"alertname": "PruneopsLatencyRegression", "model": model, "version": version, "action": action},
        "annotations": {"summary": f"{model} v{version}: p99 is over 1.5x the previous version's"},
    }


def test_alert_webhook_rolls_back_only_the_current_champion(registry: Registry) -> None:
    v1, v2 = versions(registry, "digits", 2)
    registry.set_alias("digits", "champion", v1)
    registry.promote("digits", v2)
    controller = controller_for(registry, "http://127.0.0.1:9")
    client = TestClient(create_app(controller, TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    count = controller.metrics_registry.get_sample_value

    assert client.post("/alerts", json={"alerts": [alert("digits", v2)]}).status_code == 401
    wrong = {"Authorization": "Bearer x"}
    assert client.post("/alerts", json={"alerts": [alert("digits", v2)]}, headers=wrong).status_code == 401
    assert count("pruneops_controller_errors_total", {"reason": "unauthorized"}) == 2
    assert client.post("/alerts", content=b"{not json", headers=auth).status_code == 400
    assert registry.aliases("digits")["champion"] == v2

    unknown = client.post("/alerts", json={"alerts": [alert("nope", "1")]}, headers=auth)
    assert unknown.status_code == 200 and "not watched" in unknown.json()["outcomes"][0]
    assert count("pruneops_controller_errors_total", {"reason": "unknown_model"}) == 1
    for harmless in (alert("digits", v2, status="resolved"), alert("digits", v2, action="notify"), alert("digits", v1)):
        client.post("/alerts", json={"alerts": [harmless]}, headers=auth)
    assert registry.aliases("digits")["champion"] == v2
    assert count("pruneops_ignored_alerts_total", {"model": "digits", "reason": "not_champion"}) == 1

    reply = client.post("/alerts", json={"alerts": [alert("digits", v2)]}, headers=auth)
    assert reply.status_code == 200, reply.text
    assert registry.aliases("digits")["champion"] == v1
    assert "PruneopsLatencyRegression" in registry.history("digits")[-1].why
    assert registry.version("digits", v2).tag("rollback_reason", "").startswith("alert PruneopsLatencyRegression")
    assert count("pruneops_rollbacks_total", {"model": "digits", "reason": "PruneopsLatencyRegression"}) == 1

    # Alertmanager repeats a firing alert: the now-old version is not rolled back again.
    client.post("/alerts", json={"alerts": [alert("digits", v2)]}, headers=auth)
    assert registry.aliases("digits")["champion"] == v1
    assert count("pruneops_rollbacks_total", {"model": "digits", "reason": "PruneopsLatencyRegression"}) == 1


def test_alert_without_a_rollback_target_is_counted(registry: Registry) -> None:
    (v1,) = versions(registry, "digits", 1)
    registry.set_alias("digits", "champion", v1)
    controller = controller_for(registry, "http://127.0.0.1:9")
    assert "no previous version" in controller.handle_alert(alert("digits", v1))
    assert registry.aliases("digits") == {"champion": v1}
    assert controller.metrics_registry.get_sample_value(
        "pruneops_controller_errors_total", {"reason": "no_rollback_target"}
    ) == 1  # fmt: skip


def test_controller_refuses_to_start_without_a_token(registry: Registry) -> None:
    with pytest.raises(PruneopsError, match="PRUNEOPS_CONTROLLER_TOKEN"):
        create_app(controller_for(registry, "http://127.0.0.1:9"), "")


def test_alias_state_is_exported_per_model_and_follows_changes(registry: Registry) -> None:
    a1, a2 = versions(registry, "a", 2)
    (b1,) = versions(registry, "b", 1)
    registry.set_alias("a", "champion", a1)
    registry.set_alias("b", "champion", b1)
    controller = Controller(["a", "b"], PromQuery("http://127.0.0.1:9", timeout=1), registry=registry)
    value = controller.metrics_registry.get_sample_value
    controller.analyse_once("a")
    controller.analyse_once("b")
    registry.promote("a", a2)
    controller.analyse_once("a")
    assert value("pruneops_alias_info", {"model": "a", "alias": "champion", "version": a2}) == 1
    assert value("pruneops_alias_info", {"model": "a", "alias": "previous", "version": a1}) == 1
    assert value("pruneops_alias_info", {"model": "a", "alias": "champion", "version": a1}) is None
    assert value("pruneops_alias_info", {"model": "b", "alias": "champion", "version": b1}) == 1
    assert value("pruneops_champion_version", {"model": "a"}) == float(a2)


def test_each_poll_records_alias_changes_made_in_the_mlflow_ui(registry: Registry) -> None:
    from mlflow import MlflowClient

    v1, v2 = versions(registry, "digits", 2)
    registry.set_alias("digits", "champion", v1)
    controller = controller_for(registry, "http://127.0.0.1:9")
    controller.analyse_once("digits")
    MlflowClient(registry.tracking_uri, registry.tracking_uri).set_registered_model_alias("digits", "champion", v2)
    controller.analyse_once("digits")  # the next poll notices
    last = registry.history("digits")[-2:]
    assert [(e.action, e.alias, e.from_version, e.version) for e in last] == [
        ("outside", "champion", v1, v2),
        ("reconcile", "previous", None, v1),
    ]
    assert registry.aliases("digits") == {"champion": v2, "previous": v1}
    value = controller.metrics_registry.get_sample_value
    assert value("pruneops_alias_info", {"model": "digits", "alias": "champion", "version": v2}) == 1


def test_only_this_installs_alerts_roll_back(registry: Registry) -> None:
    """Two installs serve "digits" (staging, production); each controller acts on its own alerts."""
    v1, v2 = versions(registry, "digits", 2)
    registry.set_alias("digits", "champion", v1)
    registry.promote("digits", v2)
    controller = Controller(["digits"], PromQuery("http://127.0.0.1:9", timeout=1), registry=registry,
                            namespace="production")  # fmt: skip
    count = controller.metrics_registry.get_sample_value
    for other in ({"namespace": "staging"}, {}):  # another install's alert, or one that names none
        outcome = controller.handle_alert(alert("digits", v2) | {"labels": alert("digits", v2)["labels"] | other})
        assert "not this install's (production); ignored" in outcome
    assert registry.aliases("digits")["champion"] == v2
    assert count("pruneops_ignored_alerts_total", {"model": "digits", "reason": "other_install"}) == 2
    ours = alert("digits", v2) | {"labels": alert("digits", v2)["labels"] | {"namespace": "production"}}
    assert "champion v2 -> v1" in controller.handle_alert(ours)
    assert registry.aliases("digits")["champion"] == v1


def test_analysis_reads_only_this_installs_series() -> None:
    from pruneops.monitoring.controller import analyse

    class Recorded(PromQuery):
        """Prometheus's answers for one install: every query must name its namespace."""

        def __init__(self) -> None:
            super().__init__("http://127.0.0.1:9")
            self.queries: list[str] = []

        def scalar(self, query: str) -> float | None:
            self.queries.append(query)
            return None

    prom = Recorded()
    analyse(prom, "digits", "1", "2", FAST_SPEC, namespace="production")
    assert len(prom.queries) == 6 and all('namespace="production"' in q for q in prom.queries), prom.queries
    local = Recorded()
    analyse(local, "digits", "1", "2", FAST_SPEC)
    assert not any("namespace" in q for q in local.queries)


@pytest.mark.parametrize(
    ("challenger_p99", "excess_ms", "result"),
    [
        (0.008, 0.0, "failed"),  # 2x the champion's 4 ms: a ratio failure with no floor
        (0.008, 5.0, "passed"),  # ...but only 4 ms slower: under a 5 ms floor, noise
        (0.094, 5.0, "failed"),  # 90 ms slower: a regression whatever the floor
    ],
)
def test_a_latency_ratio_fails_only_past_the_absolute_floor(
    challenger_p99: float, excess_ms: float, result: str
) -> None:
    from pruneops.monitoring.controller import analyse

    class Figures(PromQuery):
        """Prometheus's answers: champion v1 at 4 ms p99, challenger v2 as given, no faults, no drift."""

        def __init__(self) -> None:
            super().__init__("http://127.0.0.1:9")

        def scalar(self, query: str) -> float | None:
            if query.startswith("histogram_quantile"):
                return challenger_p99 if 'version="2"' in query else 0.004
            if "code=~" in query:
                return 0.0
            if query.startswith("sum(increase"):
                return 500.0
            return 0.1 if "drift_share" in query else None

    spec = RolloutSpec(max_latency_ratio=1.5, min_latency_excess_ms=excess_ms, min_samples=100)
    analysis = analyse(Figures(), "digits", "1", "2", spec)
    assert analysis.result == result, analysis.reasons
