"""Data and prediction drift of served traffic, computed by Evidently off the request path.

The sidecar copies decoded input rows (and output rows) of sampled requests into a bounded
``SampleWindow`` (:mod:`pruneops.monitoring.window`): its own, or, through the drift service
(:mod:`pruneops.monitoring.drift_service`), one per model fed by every replica, so drift is
computed over the model's whole traffic. :class:`DriftWorker` wakes every ``interval`` seconds, or as soon as
``every_rows`` new rows arrived, and compares the window with the reference sample
registered with the version being served (``reference/reference.parquet``):

- Inputs become drift features through the version's task (``Task.features``: for the
  digits images, the 64 pixel intensities as is; a task with large tensors summarises them,
  e.g. per-channel statistics). Without a task, rows whose width equals the reference's are
  used as they are.
- Evidently (its current API: ``DriftedColumnsCount``, ``ValueDrift``) tests each feature
  (its defaults: Kolmogorov-Smirnov for up to 1,000 reference rows, normed Wasserstein
  distance above) and the share of drifted ones is the drift share, every cycle. Per-feature
  scores are refreshed ``scored_per_cycle`` features at a time, in turn.
- Prediction drift: the predicted class (argmax of the outputs) against the reference's
  ``prediction`` column (the version's own predictions on the reference rows), as a
  categorical column, scored by Jensen-Shannon distance (drift at >= 0.1).

Exported (labels ``model`` and ``version``, the reference's version): ``pruneops_drift_share``,
``pruneops_drifted_features``, ``pruneops_feature_drift_score{feature}`` for at most
``max_feature_series`` features in column order (bounded label values),
``pruneops_prediction_drift_score``, and ``pruneops_drift_computation_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry

from pruneops.monitoring.metrics import DriftMetrics
from pruneops.monitoring.window import SampleWindow

log = logging.getLogger("pruneops.drift")

PREDICTION = "prediction"


@dataclass(frozen=True)
class DriftResult:
    """One drift computation: the share and count of drifted features and their scores."""

    share: float
    drifted: int
    features: int
    scores: dict[str, float]
    prediction_score: float | None
    rows: int
    seconds: float


def compute_drift(reference: pd.DataFrame, current: pd.DataFrame, scored: Sequence[str] | None = None) -> DriftResult:
    """Evidently's drift tests (its current API): the share of drifted features, the
    prediction column's drift, and the scores of the ``scored`` features (default: all).

    ``DriftedColumnsCount`` tests every feature (Kolmogorov-Smirnov p-value for numeric
    columns with up to 1,000 reference rows, normed Wasserstein distance above) and counts the
    drifted ones; ``ValueDrift`` gives one column's score. A ``ValueDrift`` per column costs
    about 40 ms at 5,000 x 64, so the drift worker scores a few features per cycle, in turn
    (:class:`DriftWorker`'s ``scored_per_cycle``), and the share stays exact every cycle.

    >>> rng = np.random.default_rng(0)
    >>> ref = pd.DataFrame(rng.normal(size=(400, 3)), columns=["a", "b", "c"])
    >>> cur = ref.assign(a=ref["a"] + 3.0)
    >>> result = compute_drift(ref, cur, scored=["a"])
    >>> result.drifted, result.features, result.share, list(result.scores)
    (1, 3, 0.3333333333333333, ['a'])
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    started = time.perf_counter()
    features = [c for c in reference.columns if c != PREDICTION and c in current.columns]
    if not features:
        raise ValueError("the reference and the current window share no feature columns")
    with_prediction = PREDICTION in reference.columns and PREDICTION in current.columns
    columns = [*features, PREDICTION] if with_prediction else features
    scored = [c for c in (features if scored is None else scored) if c in features]
    definition = DataDefinition(numerical_columns=features, categorical_columns=[PREDICTION] if with_prediction else [])
    metrics: list[Any] = [DriftedColumnsCount(columns=features)]
    # Jensen-Shannon distance for the predicted class: Evidently's default for a 500-row
    # reference is chi-square, which takes the reference's class shares as exact and flagged
    # two samples of one distribution as drifted (p = 0.04 at 2,000 current rows).
    if with_prediction:
        metrics.append(ValueDrift(column=PREDICTION, method="jensenshannon"))
    metrics += [ValueDrift(column=c) for c in scored]
    snapshot = Report(metrics).run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    values = [m["value"] for m in snapshot.dict()["metrics"]]
    counted, drift_scores = values[0], values[1:]
    prediction_score = float(drift_scores.pop(0)) if with_prediction else None
    return DriftResult(
        share=float(counted["share"]),
        drifted=int(counted["count"]),
        features=len(features),
        scores={c: float(v) for c, v in zip(scored, drift_scores, strict=True)},
        prediction_score=prediction_score,
        rows=len(current),
        seconds=time.perf_counter() - started,
    )


def current_frame(
    inputs: np.ndarray,
    outputs: np.ndarray,
    reference: pd.DataFrame,
    features_of: Callable[[np.ndarray], np.ndarray] | None = None,
) -> pd.DataFrame:
    """The window as a frame with the reference's columns: features, and ``prediction`` if outputs align.

    >>> ref = pd.DataFrame({"a": [0.0], "b": [1.0], "prediction": [1.0]})
    >>> current_frame(np.array([[0.5, 0.5]]), np.array([[0.1, 0.9]]), ref).to_dict("records")
    [{'a': 0.5, 'b': 0.5, 'prediction': 1.0}]
    """
    names = [c for c in reference.columns if c != PREDICTION]
    rows = features_of(inputs) if features_of is not None else inputs
    if rows.ndim != 2 or rows.shape[1] != len(names):
        raise ValueError(
            f"sampled inputs give {rows.shape[-1]} features but the reference has {len(names)}; "
            "register the version with its task so its feature summary is known"
        )
    frame = pd.DataFrame(rows.astype(np.float64), columns=names)
    if PREDICTION in reference.columns and len(outputs) == len(inputs) and outputs.ndim == 2:
        frame[PREDICTION] = outputs.argmax(axis=1).astype(np.float64)
    return frame


@dataclass
class Reference:
    """What the worker compares against: one version's reference frame and its feature summary."""

    model: str
    version: str
    frame: pd.DataFrame
    features_of: Callable[[np.ndarray], np.ndarray] | None = None


def registry_reference(model: str, version: str) -> Reference:
    """Load a version's reference sample and its task's feature summary from the registry.

    >>> import os, tempfile
    >>> from pruneops.modelio import build_model
    >>> from pruneops.onboard import register_source
    >>> from pruneops.registry import Registry
    >>> from pruneops.tasks.digits import task
    >>> os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db"
    >>> model = build_model(task.arch)
    >>> _ = register_source(Registry(), "digits", model, task.arch, task, "pruneops.tasks.digits:task")
    >>> reference = registry_reference("digits", "1")
    >>> len(reference.frame) > 0, reference.features_of(np.zeros((2, 64), np.float32)).shape[0]
    (True, 2)
    >>> del os.environ["MLFLOW_TRACKING_URI"]
    """
    from pruneops.registry import Registry
    from pruneops.tasks import load_task

    registry = Registry()
    frame = registry.load_reference(model, version)
    task_path = registry.version(model, version).tag("task")
    features_of = None
    if task_path:
        task = load_task(task_path)
        shape = tuple(task.example_input().shape[1:])
        features_of = lambda rows: task.features(rows.reshape(len(rows), *shape))  # noqa: E731
    return Reference(model, version, frame, features_of)


@dataclass
class DriftWorker:
    """A background thread that recomputes drift of ``window`` and exports it.

    ``target`` returns the (model, version) being served, or None before any traffic;
    ``load_reference`` turns it into a :class:`Reference` (cached per version).
    """

    window: SampleWindow
    target: Callable[[], tuple[str, str] | None]
    registry: CollectorRegistry
    load_reference: Callable[[str, str], Reference] = registry_reference
    interval: float = 30.0
    every_rows: int = 1000
    min_rows: int = 200
    max_feature_series: int = 64
    # Features whose score is computed each cycle, in turn: all 64 every 16 cycles (8 min at
    # 30 s). Each ValueDrift adds about 40 ms at 5,000 x 64 (2 cores); all 64 per cycle, ~3 s.
    scored_per_cycle: int = 4
    in_process: bool = True  # False: Evidently in a child process (see start)
    #: Metrics shared by several workers exporting into one registry (the drift service); made if None.
    shared_metrics: InitVar[DriftMetrics | None] = None
    last: DriftResult | None = field(default=None, init=False)
    last_target: tuple[str, str] | None = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _reference: Reference | None = field(default=None, init=False)
    _pool: Any = field(default=None, init=False)
    _cursor: int = field(default=0, init=False)

    def __post_init__(self, shared_metrics: DriftMetrics | None) -> None:
        self.metrics = shared_metrics if shared_metrics is not None else DriftMetrics(self.registry)

    def start(self) -> threading.Thread:
        """Run in a thread; with ``in_process=False`` Evidently runs in a child process.

        The sidecar uses a child process: Evidently holds the GIL for much of its second,
        which in a thread would stall the sidecar's event loop and every request with it.
        The child starts and imports Evidently now, at start-up: spawned on first use, its
        seconds of CPU landed in the middle of live traffic, and on 2 cores they made a
        canary's p99 jump (7x in one closed-loop run) until analysis rejected it.
        """
        if not self.in_process:
            self._child().submit(_import_evidently)
        thread = threading.Thread(target=self._loop, name="drift-worker", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _compute(self, reference: pd.DataFrame, current: pd.DataFrame) -> DriftResult:
        scored = self._next_scored([c for c in reference.columns if c != PREDICTION][: self.max_feature_series])
        if self.in_process:
            return compute_drift(reference, current, scored)
        return self._child().submit(compute_drift, reference, current, scored).result()

    def _next_scored(self, features: list[str]) -> list[str]:
        """The next ``scored_per_cycle`` features to score, wrapping around.

        >>> worker = DriftWorker(None, None, CollectorRegistry(), scored_per_cycle=2)  # type: ignore[arg-type]
        >>> [worker._next_scored(["a", "b", "c"]) for _ in range(3)]
        [['a', 'b'], ['c', 'a'], ['b', 'c']]
        """
        if not features:
            return []
        count = min(self.scored_per_cycle, len(features))
        chosen = [features[(self._cursor + i) % len(features)] for i in range(count)]
        self._cursor = (self._cursor + count) % len(features)
        return chosen

    def _child(self) -> Any:
        """The one child process Evidently runs in (spawned on first call)."""
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def _loop(self) -> None:
        seen, last_run = 0, time.monotonic()
        while not self._stop.wait(0.5):
            added = self.window.added - seen
            if added <= 0 or (added < self.every_rows and time.monotonic() - last_run < self.interval):
                continue
            seen, last_run = self.window.added, time.monotonic()
            self.run_once()

    def run_once(self) -> DriftResult | None:
        """Compute and export drift now; a failure is logged and counted, never raised."""
        target = self.target()
        inputs, outputs = self.window.snapshot()
        if target is None or len(inputs) < self.min_rows:
            return None
        model, version = target
        try:
            if self._reference is None or (self._reference.model, self._reference.version) != target:
                self._reference = self.load_reference(model, version)
            frame = current_frame(inputs, outputs, self._reference.frame, self._reference.features_of)
            result = self._compute(self._reference.frame, frame)
        except Exception as err:  # noqa: BLE001 - the worker must outlive any one bad window
            log.warning("drift for %s v%s failed: %s: %s", model, version, type(err).__name__, err)
            self.metrics.errors.labels(model=model).inc()
            return None
        self._export(model, version, result)
        self.last = result
        return result

    def _export(self, model: str, version: str, result: DriftResult) -> None:
        labels = {"model": model, "version": version}
        metrics = self.metrics
        if self.last_target is not None and self.last_target != (model, version):
            metrics.forget(*self.last_target)  # a swapped-out version's drift is not current
        self.last_target = (model, version)
        metrics.share.labels(**labels).set(result.share)
        metrics.drifted.labels(**labels).set(result.drifted)
        metrics.window_rows.labels(**labels).set(result.rows)
        metrics.seconds.labels(model=model).observe(result.seconds)
        for feature in list(result.scores)[: self.max_feature_series]:
            metrics.feature_score.labels(**labels, feature=feature).set(result.scores[feature])
        if result.prediction_score is not None:
            metrics.prediction_score.labels(**labels).set(result.prediction_score)


def _import_evidently() -> None:
    """Run in the drift child at start-up, so the first computation does not pay for the imports."""
    import evidently
    import evidently.metrics  # noqa: F401
