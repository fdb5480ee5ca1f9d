"""The drift service: drift over a model's whole traffic, fed by every sidecar's samples.

With one sidecar per replica, a drift worker inside each sidecar sees 1/N of the traffic and N
workers export N answers. ``pruneops drift-service`` instead holds one bounded window per model,
filled by ``POST /v1/samples`` from every sidecar (``pruneops sidecar --drift-service URL``), and
runs one :class:`pruneops.monitoring.drift.DriftWorker` per model over it. The sidecars stay
lean: no registry client, no reference download, no task module, no Evidently.

``POST /v1/samples`` takes ``{"samples": [{"model", "version", "alias", "inputs": [[...]],
"outputs": [[...]]}, ...]}``. Bodies are capped (4 MiB) before anything reads them, the bearer
token (``PRUNEOPS_DRIFT_TOKEN``) is checked before the body is parsed, a batch holds at most
``max_batch_rows`` rows, and at most ``max_models`` models get a window (429 past that), so the
service's memory is bounded whatever anonymous or authenticated clients send. The drift target
of a model is the version its sidecars last reported as ``champion`` (else the last version
reported), as the sidecar's own worker did. ``GET /metrics`` exports the drift series,
``GET /healthz`` the models and their rows.

>>> import numpy as np
>>> service = DriftService(CollectorRegistry(), start_workers=False)
>>> service.add("digits", "3", "champion", np.zeros((5, 64)), None)
5
>>> service.target("digits"), service.windows["digits"].added
(('digits', '3'), 5)
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from pruneops.errors import PruneopsError
from pruneops.monitoring.drift import DriftWorker, Reference, registry_reference
from pruneops.monitoring.metrics import DriftMetrics
from pruneops.monitoring.window import SAMPLES_PATH, TOKEN_ENV, SampleWindow
from pruneops.webhooks import bearer_matches

log = logging.getLogger("pruneops.drift_service")

#: A batch of sampled rows: about 60,000 numbers of JSON.
SAMPLES_BODY_BYTES = 4 * 1024 * 1024


class TooManyModels(PruneopsError):
    """A sample for a model past ``max_models``: refused, so windows stay bounded."""


@dataclass
class _Served:
    version: str
    champion: str | None = None


class DriftService:
    """One window and one drift worker per model; see the module docstring."""

    def __init__(
        self,
        registry: CollectorRegistry,
        load_reference: Callable[[str, str], Reference] = registry_reference,
        max_models: int = 32,
        window_rows: int = 5000,
        interval: float = 30.0,
        every_rows: int = 1000,
        min_rows: int = 200,
        max_batch_rows: int = 2000,
        start_workers: bool = True,
    ) -> None:
        self.registry, self.load_reference = registry, load_reference
        self.max_models, self.window_rows, self.max_batch_rows = max_models, window_rows, max_batch_rows
        self.interval, self.every_rows, self.min_rows = interval, every_rows, min_rows
        self.start_workers = start_workers
        self.metrics = DriftMetrics(registry)
        self.received = Counter(
            "pruneops_drift_samples_received_total",
            "Sampled rows received from sidecars.",
            ["model"],
            registry=registry,
        )
        self.refused = Counter(
            "pruneops_drift_samples_refused_total", "Sample batches refused, by reason.", ["reason"], registry=registry
        )
        self.windows: dict[str, SampleWindow] = {}
        self.workers: dict[str, DriftWorker] = {}
        self._served: dict[str, _Served] = {}
        self._lock = threading.Lock()

    def target(self, model: str) -> tuple[str, str] | None:
        """The (model, version) drift is computed against: the last champion reported, else the last version."""
        served = self._served.get(model)
        if served is None:
            return None
        return model, served.champion or served.version

    def add(self, model: str, version: str, alias: str, inputs: np.ndarray, outputs: np.ndarray | None) -> int:
        """Take one sidecar's rows of one model; returns the rows taken."""
        with self._lock:
            if model not in self.windows:
                if len(self.windows) >= self.max_models:
                    raise TooManyModels(f"already {self.max_models} models; samples of {model!r} are refused")
                self.windows[model] = SampleWindow(self.window_rows)
                worker = DriftWorker(
                    self.windows[model],
                    functools.partial(self.target, model),
                    self.registry,
                    load_reference=self.load_reference,
                    interval=self.interval,
                    every_rows=self.every_rows,
                    min_rows=self.min_rows,
                    shared_metrics=self.metrics,
                )
                self.workers[model] = worker
                if self.start_workers:
                    worker.start()
            served = self._served.setdefault(model, _Served(version))
            served.version = version
            if alias == "champion":
                served.champion = version
        taken = self.windows[model].add(inputs, outputs)
        self.received.labels(model=model).inc(taken)
        return taken

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()


def parse_samples(body: bytes, max_rows: int) -> list[tuple[str, str, str, np.ndarray, np.ndarray | None]]:
    """A ``POST /v1/samples`` body as (model, version, alias, inputs, outputs); ``ValueError`` says what is wrong.

    >>> parse_samples(b'{"samples": [{"model": "m", "version": "1", "alias": "champion", "inputs": [[1, 2]]}]}', 10)
    [('m', '1', 'champion', array([[1., 2.]], dtype=float32), None)]
    >>> parse_samples(b'{"samples": [{"model": "m", "version": "1", "inputs": [[1], [2, 3]]}]}', 10)
    Traceback (most recent call last):
    ...
    ValueError: samples[0].inputs: rows of one width, all numbers
    """
    samples = json.loads(body).get("samples")
    if not isinstance(samples, list):
        raise ValueError('expected {"samples": [...]}')
    parsed: list[tuple[str, str, str, np.ndarray, np.ndarray | None]] = []
    rows = 0
    for index, sample in enumerate(samples):
        if not isinstance(sample, dict) or not all(isinstance(sample.get(k), str) for k in ("model", "version")):
            raise ValueError(f"samples[{index}]: needs model and version strings")
        inputs = _rows(sample.get("inputs"), f"samples[{index}].inputs")
        outputs = None if sample.get("outputs") is None else _rows(sample["outputs"], f"samples[{index}].outputs")
        rows += len(inputs)
        if rows > max_rows:
            raise ValueError(f"more than {max_rows} rows in one batch")
        alias = sample["alias"] if isinstance(sample.get("alias"), str) else "unknown"
        parsed.append((sample["model"][:200], sample["version"][:50], alias[:50], inputs, outputs))
    return parsed


def _rows(value: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise ValueError(f"{where}: rows of one width, all numbers") from None
    if array.ndim != 2 or not np.isfinite(array).all():
        raise ValueError(f"{where}: rows of one width, all finite numbers")
    return array


def create_app(service: DriftService, token: str) -> Any:
    """The service's HTTP API (Starlette behind :class:`pruneops.asgi.BodyLimit`): samples, metrics, health.

    >>> create_app(DriftService(CollectorRegistry(), start_workers=False), token="")
    Traceback (most recent call last):
    ...
    pruneops.errors.PruneopsError: the drift service needs a token for its sidecars; set PRUNEOPS_DRIFT_TOKEN
    >>> type(create_app(DriftService(CollectorRegistry(), start_workers=False), token="t")).__name__
    'BodyLimit'
    """
    import asyncio

    from prometheus_client import generate_latest
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from pruneops.asgi import BodyLimit

    if not token:
        raise PruneopsError(f"the drift service needs a token for its sidecars; set {TOKEN_ENV}")

    async def samples(request: Request) -> JSONResponse:
        if not bearer_matches(request.headers, token):
            service.refused.labels(reason="unauthorized").inc()
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        try:
            batch = parse_samples(await request.body(), service.max_batch_rows)
        except (ValueError, AttributeError) as err:
            service.refused.labels(reason="bad_payload").inc()
            return JSONResponse({"error": f"bad samples: {err}"}, status_code=400)
        taken = 0
        try:
            for model, version, alias, inputs, outputs in batch:
                taken += await asyncio.to_thread(service.add, model, version, alias, inputs, outputs)
        except TooManyModels as err:
            service.refused.labels(reason="too_many_models").inc()
            return JSONResponse({"error": str(err), "rows": taken}, status_code=429)
        return JSONResponse({"rows": taken})

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(service.registry), media_type="text/plain; version=0.0.4")

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "models": {m: w.added for m, w in service.windows.items()}})

    app = Starlette(routes=[Route(SAMPLES_PATH, samples, methods=["POST"]), Route("/metrics", metrics, methods=["GET"]),
                            Route("/healthz", healthz, methods=["GET"])])  # fmt: skip
    return BodyLimit(app, limit=SAMPLES_BODY_BYTES)
