"""Render the chart with Helm's own Go SDK (helm-python-sdk), as `helm template` would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
CHART = ROOT / "helm" / "pruneops"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def ci_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict[str, Any], name: str = "pruneops", namespace: str = "ml") -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders with ``values`` (NOTES.txt left out)."""
    from helm_python import Chart

    chart = Chart.load(str(CHART))
    try:
        chart.validate_schema(values)
        rendered = chart.render(values, name=name, namespace=namespace, is_install=True)
    finally:
        chart.close()
    return [
        doc
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@pytest.fixture(params=CI_VALUES, ids=[p.name for p in CI_VALUES])
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param.name, render(ci_values(request.param))
