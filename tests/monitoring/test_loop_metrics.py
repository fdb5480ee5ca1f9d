"""The lock-free counters and histograms export what prometheus_client's own would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pruneops.monitoring.loop_metrics import LoopCounter, LoopHistogram
from pruneops.monitoring.metrics import LATENCY_BUCKETS, SIZE_BUCKETS


def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every exported sample but the ``_created`` ones (which the loop metrics leave out)."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_exposition_matches_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    labels = ["model", "version", "alias"]
    mine = (
        LoopHistogram("t_duration_seconds", "Latency.", labels, buckets=LATENCY_BUCKETS, registry=ours),
        LoopCounter("t_requests_total", "Requests.", [*labels, "code"], registry=ours),
        LoopHistogram("t_size_bytes", "Sizes.", buckets=SIZE_BUCKETS, registry=ours),
    )
    reference = (
        Histogram("t_duration_seconds", "Latency.", labels, buckets=LATENCY_BUCKETS, registry=theirs),
        Counter("t_requests_total", "Requests.", [*labels, "code"], registry=theirs),
        Histogram("t_size_bytes", "Sizes.", buckets=SIZE_BUCKETS, registry=theirs),
    )
    # Values on bucket bounds, between them, past the last one; two series; a keyword label.
    for seconds in (0.0001, 0.0005, 0.003, 0.25, 7.0, 99.0):
        for duration, requests, size in (mine, reference):
            duration.labels("digits", "3", "champion").observe(seconds)
            duration.labels(model="digits", version="4", alias="challenger").observe(seconds / 2)
            requests.labels("digits", "3", "champion", "200").inc()
            size.observe(int(seconds * 100_000))
    mine[1].labels("digits", "3", "champion", "500").inc(2)
    reference[1].labels("digits", "3", "champion", "500").inc(2)
    assert samples(ours) == samples(theirs)
    assert ours.get_sample_value("t_duration_seconds_bucket", {
        "model": "digits", "version": "3", "alias": "champion", "le": "0.0005"}) == 2.0  # fmt: skip


def test_misuse_is_refused() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("t_total", "Things.", ["code"], registry=registry)
    with pytest.raises(ValueError, match="only go up"):
        counter.labels("200").inc(-1)
    with pytest.raises(ValueError, match="expected 1 label values"):
        counter.labels("200", "extra")
    with pytest.raises(ValueError, match="by position or all by name"):
        counter.labels(status="200")
    with pytest.raises(ValueError, match="increasing"):
        LoopHistogram("t_seconds", "Latency.", buckets=(1.0, 0.5), registry=None)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("t_total", "The same name again.", registry=registry)  # the registry knows the name
