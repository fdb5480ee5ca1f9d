"""The closed loop with real binaries: MLflow server, model server, sidecar, controller, Prometheus, Alertmanager.

A challenger is promoted by live analysis; then a latency regression is promoted on
purpose (the drill), the alert fires, Alertmanager calls the controller, the controller
rolls back, and the server serves the previous version again. While the stack is up,
every PromQL expression of the Grafana dashboards is run against its Prometheus.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pruneops.monitoring.drill import closed_loop
from pruneops.monitoring.localstack import MISSING_BINARIES, LocalStack, have_binaries
from pruneops.registry import Registry

DASHBOARDS = Path(__file__).parents[2] / "monitoring" / "grafana"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not have_binaries(), reason=MISSING_BINARIES),
]


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation of every dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            found += [(f"{path.name}: {panel['title']}", t["expr"]) for t in panel["targets"]]
        annotations = [a for a in board["annotations"]["list"] if "expr" in a]
        found += [(f"{path.name}: annotation {a['name']}", a["expr"]) for a in annotations]
    return found


def as_instant_query(expr: str) -> str:
    """Grafana's variables, filled in as Grafana would with 'All' selected (cluster and
    namespace: their allValue ``.*``, which also matches a series without the label)."""
    filled = {"$model": ".+", "$cluster": ".*", "$namespace": ".*", "$__rate_interval": "1m"}
    for variable, everything in filled.items():
        expr = expr.replace(variable, everything)
    return expr


def check_dashboards(stack: LocalStack) -> None:
    time.sleep(12)  # two more scrapes, so the rollback counter has a rate
    prometheus = stack.url("prometheus")
    empty = []
    for where, expr in dashboard_queries():
        reply = httpx.get(f"{prometheus}/api/v1/query", params={"query": as_instant_query(expr)}, timeout=10)
        assert reply.status_code == 200 and reply.json()["status"] == "success", f"{where}: {reply.text}"
        if not reply.json()["data"]["result"]:
            empty.append(where)
    assert not empty, f"queries that returned no series: {empty}"
    models = httpx.get(f"{prometheus}/api/v1/label/model/values", params={"match[]": "pruneops_alias_info"}).json()
    assert models["data"] == ["digits"]  # the dashboards' $model variable


def test_promotion_then_regression_rollback(mlflow_server: str, tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_LOGGING_LEVEL": "WARNING"}
    script = r"""
from pruneops.monitoring.drill import register_copy
from pruneops.demo import init_demo
from pruneops.recipe import RolloutSpec
from pruneops.registry import Registry
v1 = init_demo("digits")
registry = Registry()
# v2 is an identical copy: this checks the loop, not the threshold. On 2 shared cores the p99
# of ~100 requests per version swings by 2-5x from scrape to scrape (a drift computation, a
# GC pause), so a tight ratio rejected the copy in one run of three.
spec = RolloutSpec(successes=2, min_samples=30, max_latency_ratio=3.0, failure_limit=5)
tags = {"parent_version": v1.version, "rollout": spec.model_dump_json(), "speedup": "1.0", "accuracy_drop": "0.0"}
v2 = register_copy(registry, "digits", v1.version, tags)
registry.set_alias("digits", "challenger", v2, why="test")
print(v1.version, v2)
"""
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    v1, v2 = out.stdout.split()[-2:]
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server  # this process's registry client (isolated per test)
    from pruneops.tasks.digits import task

    report = closed_loop("digits", tmp_path / "stack", task.example_input(300).numpy(), env=env,
                         while_up=check_dashboards)  # fmt: skip

    assert report.promoted == v2
    drill = report.drill
    assert drill.restored == v2 and drill.regressed not in (v1, v2)
    assert drill.breach_to_served_s is not None, "the previous version never served again"
    assert drill.rollback_why and drill.rollback_why.startswith("alert PruneopsLatencyRegression")
    assert drill.failed_requests == 0
    registry = Registry()
    assert registry.aliases("digits")["champion"] == v2
    assert "previous" not in registry.aliases("digits")  # consumed: a repeated alert cannot roll back twice
    actions = [(e.action, e.alias, e.version) for e in registry.history("digits")]
    assert ("promote", "champion", v2) in actions and ("rollback", "champion", v2) in actions
    # The manual CLI keeps working alongside the controller.
    history = subprocess.run([sys.executable, "-m", "pruneops.cli", "history", "digits"], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert history.returncode == 0 and re.search(r"rollback", history.stdout), history.stdout[-2000:]
