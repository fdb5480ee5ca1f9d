"""A small client of Prometheus's HTTP query API that never guesses: missing data is ``None``.

>>> PromQuery("http://127.0.0.1:9", timeout=0.5).scalar("up")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pruneops.monitoring.prom.PrometheusUnavailable: Prometheus at http://127.0.0.1:9 unreachable: ConnectError...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx

from pruneops.errors import PruneopsError


class PrometheusUnavailable(PruneopsError):
    """Prometheus did not answer, or answered with an error."""


@dataclass
class PromQuery:
    """Instant queries against ``url`` (e.g. ``http://127.0.0.1:9090``)."""

    url: str
    timeout: float = 5.0

    def vector(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """The instant vector of ``expr`` as (labels, value) pairs; NaN samples are dropped."""
        try:
            reply = httpx.get(f"{self.url.rstrip('/')}/api/v1/query", params={"query": expr}, timeout=self.timeout)
        except httpx.HTTPError as err:
            raise PrometheusUnavailable(f"Prometheus at {self.url} unreachable: {type(err).__name__}") from None
        try:
            body: dict[str, Any] = reply.json()
        except ValueError:
            raise PrometheusUnavailable(f"Prometheus answered {reply.status_code} without JSON") from None
        if reply.status_code != 200 or body.get("status") != "success":
            raise PrometheusUnavailable(f"query {expr!r} failed: {body.get('error', reply.status_code)}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        samples = [(item["metric"], float(item["value"][1])) for item in data["result"]]
        return [(labels, value) for labels, value in samples if not math.isnan(value)]

    def scalar(self, expr: str) -> float | None:
        """The single value of ``expr``, or None when it returns no series (never 0 for "missing")."""
        found = self.vector(expr)
        if not found:
            return None
        if len(found) > 1:
            raise PrometheusUnavailable(f"query {expr!r} returned {len(found)} series; expected one")
        return found[0][1]
