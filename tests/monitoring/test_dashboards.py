"""The Grafana dashboards serve many installs: cluster and namespace variables, used by every query.

(``tests/monitoring/test_closed_loop.py`` runs every one of these queries against a live
Prometheus; this checks their scope without one.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.monitoring.test_closed_loop import DASHBOARDS, dashboard_queries

pytestmark = pytest.mark.unit
SELECTOR = re.compile(r"\b((?:pruneops_|model_version:)[A-Za-z0-9_:]*)(\{[^}]*\})?")


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name)
def test_cluster_and_namespace_variables_come_first(path: Path) -> None:
    variables = {v["name"]: v for v in json.loads(path.read_text())["templating"]["list"]}
    assert list(variables)[:4] == ["datasource", "cluster", "namespace", "model"]
    for name in ("cluster", "namespace"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*", name  # also label-less series
    assert 'namespace=~"$namespace"' in variables["model"]["query"]["query"]


def test_every_query_is_scoped_to_the_chosen_cluster_and_namespace() -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15
    for where, expr in queries:
        for metric, matchers in SELECTOR.findall(expr):
            assert 'cluster=~"$cluster"' in matchers and 'namespace=~"$namespace"' in matchers, (where, metric)
