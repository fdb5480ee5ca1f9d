"""Drift over a full sampled window: 5,000 rows x 64 features against a 500-row reference.

Fills the sidecar's ``SampleWindow`` (bounded to 5,000 rows), then times what the drift worker
does each cycle: snapshot, build the frame, run Evidently's current API (the drift share of
all features, the prediction's drift, and ``scored_per_cycle`` feature scores). Beside it,
interleaved round by round, the legacy ``DataDriftTable`` pruneops used before (every score
every cycle). Goal from the issue: under 1 s on 2 cores, memory bounded. Reports medians and
spreads of ``--repeats`` rounds, their ratio, the peak Python allocation during one cycle
(tracemalloc), and the window's own size. Writes ``benchmarks/results/drift_window.json``.

Run: ``.venv/bin/python benchmarks/drift_window.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from pruneops.monitoring.drift import DriftWorker, compute_drift, current_frame
from pruneops.monitoring.window import SampleWindow

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    names = [f"px_{i}" for i in range(args.features)]
    reference = pd.DataFrame(rng.uniform(size=(500, args.features)), columns=names)
    reference["prediction"] = rng.integers(0, 10, 500).astype(float)
    window = SampleWindow(max_rows=args.rows)
    for _ in range(2):  # twice the capacity: the window must stay bounded
        window.add(rng.uniform(size=(args.rows, args.features)) + 0.1, rng.normal(size=(args.rows, 10)))

    per_cycle = DriftWorker.scored_per_cycle
    rotation = [names[(i * per_cycle + j) % len(names)] for i in range(len(names)) for j in range(per_cycle)]

    def cycle(round_index: int = 0) -> float:
        inputs, outputs = window.snapshot()
        started = time.perf_counter()
        scored = rotation[round_index * per_cycle : (round_index + 1) * per_cycle]
        compute_drift(reference, current_frame(inputs, outputs, reference), scored)
        return time.perf_counter() - started

    def legacy_cycle() -> float:
        inputs, outputs = window.snapshot()
        started = time.perf_counter()
        _legacy_drift(reference, current_frame(inputs, outputs, reference))
        return time.perf_counter() - started

    cycle(), legacy_cycle()  # imports and first-call setup
    seconds, legacy = [], []
    for round_index in range(args.repeats):  # interleaved: each pair under the same conditions
        seconds.append(cycle(round_index))
        legacy.append(legacy_cycle())
    tracemalloc.start()
    cycle()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    inputs, outputs = window.snapshot()
    result = {
        "benchmark": "drift_window",
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "window_rows": len(inputs),
        "features": args.features,
        "reference_rows": len(reference),
        "median_s": float(np.median(seconds)),
        "p10_s": float(np.percentile(seconds, 10)),
        "p90_s": float(np.percentile(seconds, 90)),
        "seconds": seconds,
        "scored_per_cycle": per_cycle,
        "legacy_data_drift_table_median_s": float(np.median(legacy)),
        "legacy_seconds": legacy,
        "legacy_over_current_ratio_median": float(np.median(np.array(legacy) / np.array(seconds))),
        "peak_python_alloc_mb": peak / 2**20,
        "window_mb": (inputs.nbytes + outputs.nbytes) / 2**20,
        "goal_s": 1.0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "drift_window.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def _legacy_drift(reference: pd.DataFrame, current: pd.DataFrame) -> None:
    """What pruneops ran before: evidently.legacy's DataDriftTable, every feature's score each cycle."""
    from evidently.legacy.metrics import DataDriftTable
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report

    features = [c for c in reference.columns if c != "prediction"]
    columns = [*features, "prediction"]
    mapping = ColumnMapping(numerical_features=features, categorical_features=["prediction"])
    report = Report(metrics=[DataDriftTable(columns=columns, per_column_stattest={"prediction": "jensenshannon"})])
    report.run(reference_data=reference[columns], current_data=current[columns], column_mapping=mapping)
    report.as_dict()


if __name__ == "__main__":
    main()
