"""Drift: Evidently's tests over the sampled window, the worker, and what it exports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from pruneops.monitoring.drift import DriftWorker, Reference, compute_drift, current_frame
from pruneops.monitoring.window import SampleWindow


def reference_frame(rows: int = 500, features: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, features)), columns=[f"f{i}" for i in range(features)])
    frame["prediction"] = rng.integers(0, 4, rows).astype(float)
    return frame


def test_same_distribution_barely_drifts() -> None:
    result = compute_drift(reference_frame(seed=0), reference_frame(rows=2000, seed=1))
    assert result.drifted <= 1 and result.share <= 1 / 8
    assert result.prediction_score is not None and result.prediction_score < 0.1  # Jensen-Shannon distance


def test_shifted_features_and_predictions_are_found() -> None:
    current = reference_frame(rows=2000, seed=1)
    current[["f0", "f1", "f2", "f3", "f4"]] += 1.5
    current["prediction"] = 3.0
    result = compute_drift(reference_frame(), current)
    assert result.drifted >= 5 and result.share >= 5 / 8
    assert all(result.scores[f"f{i}"] < 0.05 for i in range(5))
    assert result.prediction_score is not None and result.prediction_score > 0.1
    assert result.rows == 2000 and result.features == 8


def test_current_frame_takes_argmax_as_prediction_and_refuses_wrong_widths() -> None:
    reference = reference_frame(features=3)
    frame = current_frame(np.ones((2, 3)), np.array([[0.1, 0.9, 0, 0], [0.8, 0.1, 0, 0]]), reference)
    assert list(frame.columns) == ["f0", "f1", "f2", "prediction"]
    assert frame["prediction"].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="give 5 features but the reference has 3"):
        current_frame(np.ones((2, 5)), np.ones((2, 4)), reference)


def test_worker_exports_drift_and_forgets_a_swapped_out_version() -> None:
    registry = CollectorRegistry()
    window = SampleWindow(max_rows=1000)
    rng = np.random.default_rng(2)
    window.add(rng.normal(size=(600, 8)) + 2.0, np.eye(4)[rng.integers(0, 4, 600)])
    target = {"value": ("digits", "1")}
    worker = DriftWorker(window, lambda: target["value"], registry,
                         load_reference=lambda m, v: Reference(m, v, reference_frame()), min_rows=100)  # fmt: skip
    result = worker.run_once()
    assert result is not None and result.share == 1.0
    labels = {"model": "digits", "version": "1"}
    assert registry.get_sample_value("pruneops_drift_share", labels) == 1.0
    assert registry.get_sample_value("pruneops_drifted_features", labels) == 8
    assert registry.get_sample_value("pruneops_feature_drift_score", labels | {"feature": "f0"}) < 0.05
    assert registry.get_sample_value("pruneops_drift_window_rows", labels) == 600
    target["value"] = ("digits", "2")
    worker.run_once()
    assert registry.get_sample_value("pruneops_drift_share", labels) is None
    assert registry.get_sample_value("pruneops_feature_drift_score", labels | {"feature": "f0"}) is None
    assert registry.get_sample_value("pruneops_drift_share", {"model": "digits", "version": "2"}) == 1.0


def test_worker_counts_failures_and_keeps_going() -> None:
    registry = CollectorRegistry()
    window = SampleWindow()
    window.add(np.ones((300, 5)), None)  # 5 features against a reference of 8

    def reference(model: str, version: str) -> Reference:
        return Reference(model, version, reference_frame())

    worker = DriftWorker(window, lambda: ("digits", "1"), registry, load_reference=reference, min_rows=10)
    assert worker.run_once() is None
    assert registry.get_sample_value("pruneops_drift_errors_total", {"model": "digits"}) == 1.0
    assert worker.run_once() is None
    assert registry.get_sample_value("pruneops_drift_errors_total", {"model": "digits"}) == 2.0


def test_worker_waits_for_enough_rows() -> None:
    window = SampleWindow()
    window.add(np.ones((5, 8)), None)
    worker = DriftWorker(window, lambda: ("digits", "1"), CollectorRegistry(), min_rows=200,
                         load_reference=lambda m, v: Reference(m, v, reference_frame()))  # fmt: skip
    assert worker.run_once() is None


def test_worker_can_run_evidently_in_a_child_process() -> None:
    """The sidecar's setting: the computation leaves the process, so the event loop keeps the GIL."""
    registry = CollectorRegistry()
    window = SampleWindow()
    window.add(np.random.default_rng(3).normal(size=(300, 8)) + 2.0, None)
    worker = DriftWorker(window, lambda: ("digits", "1"), registry, min_rows=10, in_process=False,
                         load_reference=lambda m, v: Reference(m, v, reference_frame()))  # fmt: skip
    try:
        result = worker.run_once()
    finally:
        worker.stop()
    assert result is not None and result.share == 1.0
    assert registry.get_sample_value("pruneops_drift_share", {"model": "digits", "version": "1"}) == 1.0


def test_the_current_api_gives_the_legacy_tables_figures() -> None:
    """Side by side with what pruneops used before (evidently.legacy's DataDriftTable, same
    tests): the same drifted features, share and scores on one shifted window."""
    from evidently.legacy.metrics import DataDriftTable
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report

    reference, current = reference_frame(features=16), reference_frame(rows=3000, features=16, seed=4)
    current[["f0", "f3", "f9"]] += 0.4
    ours = compute_drift(reference, current)
    features = [f"f{i}" for i in range(16)]
    legacy = Report(metrics=[DataDriftTable(columns=features)])
    legacy.run(reference_data=reference[features], current_data=current[features],
               column_mapping=ColumnMapping(numerical_features=features))  # fmt: skip
    by_column = legacy.as_dict()["metrics"][0]["result"]["drift_by_columns"]
    assert ours.drifted == sum(bool(by_column[c]["drift_detected"]) for c in features) >= 3
    assert ours.share == ours.drifted / 16
    for feature in features:
        assert ours.scores[feature] == pytest.approx(by_column[feature]["drift_score"], rel=1e-9, abs=1e-300)


def test_worker_scores_every_feature_in_turn() -> None:
    registry = CollectorRegistry()
    window = SampleWindow(max_rows=1000)
    window.add(np.random.default_rng(5).normal(size=(600, 8)), np.eye(4)[np.zeros(600, dtype=int)])
    worker = DriftWorker(window, lambda: ("digits", "1"), registry, scored_per_cycle=3,
                         load_reference=lambda m, v: Reference(m, v, reference_frame()), min_rows=100)  # fmt: skip
    labels = {"model": "digits", "version": "1"}

    def exported() -> set[str]:
        score = registry.get_sample_value
        found = {f"f{i}": score("pruneops_feature_drift_score", labels | {"feature": f"f{i}"}) for i in range(8)}
        return {feature for feature, value in found.items() if value is not None}

    first = worker.run_once()
    assert first is not None and list(first.scores) == ["f0", "f1", "f2"] and exported() == {"f0", "f1", "f2"}
    assert registry.get_sample_value("pruneops_drifted_features", labels) is not None  # the share: every cycle
    worker.run_once()
    worker.run_once()
    assert exported() == {f"f{i}" for i in range(8)}  # 3 cycles of 3 cover all 8
