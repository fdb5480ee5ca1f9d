"""The V2 model server: KServe's ``ModelServer`` with a model that follows a registry alias.

``RegistryModel`` serves ``NAME@champion`` (or another alias) over the Open Inference
Protocol v2 (KServe provides the endpoints). A follower thread polls the registry, and the
MLflow ``model_version_alias.created`` webhook (``POST /webhooks/mlflow``, HMAC-verified)
makes it look at once. A new version is loaded, warmed up and smoke-tested off the request
path, then swapped in by replacing one reference: requests already running finish on the
version they started with, so no request fails because of a swap. If any step fails, the
old version keeps serving and ``pruneops_model_load_failures_total`` counts the failure.

Optional challenger: ``canary`` sends that fraction of requests to ``NAME@challenger``;
``shadow`` answers from the champion, mirrors each request to the challenger off the
response path, and exports ``pruneops_shadow_agreement_ratio`` (same top class).

Responses carry ``x-pruneops-version`` and ``x-pruneops-alias`` headers, which the sidecar
uses as metric labels. Client errors get 4xx with ``{"error": ...}``: malformed JSON 400, a
body KServe cannot parse 422, wrong shape or datatype 400, unknown model 404, oversized body
413.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
import uuid
from typing import Any

import numpy as np

# Module level on purpose: FastAPI resolves route annotations from module globals.
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from monitoring.metrics import ServerMetrics
from pruneops.errors import PruneopsError
from pruneops.registry import CHALLENGER, CHAMPION, Registry
from serving.limits import MAX_BODY_BYTES, drained_if_oversized
from serving.loader import ServedVersion, load_version

log = logging.getLogger("pruneops.serving")


def _kserve_model_base() -> type:
    from kserve import Model

    return Model


class RegistryModel(_kserve_model_base()):  # type: ignore[misc]
    """A KServe model whose weights are whatever version a registry alias points at."""

    def __init__(
        self,
        name: str,
        registry: Registry,
        metrics: ServerMetrics,
        alias: str = CHAMPION,
        canary: float = 0.0,
        shadow: bool = False,
        device: str = "cpu",
    ) -> None:
        # return_response_headers: KServe passes predict() a dict whose entries become headers.
        super().__init__(name, return_response_headers=True)
        self.registry, self.metrics, self.alias = registry, metrics, alias
        self.canary, self.shadow, self.device = canary, shadow, device
        self.current: ServedVersion | None = None
        self.challenger: ServedVersion | None = None
        self._refresh_lock = threading.Lock()
        self._agreement = (0, 0)

    # -------------------------------------------------------------- following the registry

    def load(self) -> bool:
        self.refresh()
        self.ready = self.current is not None
        return bool(self.ready)

    def refresh(self) -> None:
        """Bring the served versions in line with the registry's aliases (one refresh at a time)."""
        with self._refresh_lock:
            self.current = self._follow(self.alias, self.current)
            if self.canary > 0 or self.shadow:
                self.challenger = self._follow(CHALLENGER, self.challenger, optional=True)

    def _follow(self, alias: str, served: ServedVersion | None, optional: bool = False) -> ServedVersion | None:
        try:
            target = self.registry.aliases(self.name).get(alias)
        except PruneopsError as err:
            log.warning("cannot read aliases of %s: %s", self.name, err)
            return served
        if target is None:
            if not optional:
                log.warning("%s has no alias %s", self.name, alias)
            return None if optional else served
        if served is not None and served.version == target:
            return served
        try:
            fresh = load_version(self.registry, self.name, target, alias, device=self.device)
        except Exception as err:  # noqa: BLE001 - any failure keeps the old version serving
            self.metrics.load_failures.labels(model=self.name).inc()
            log.error("refusing %s v%s (%s): %s; still serving %s", self.name, target, alias, err,
                      f"v{served.version}" if served else "nothing")  # fmt: skip
            return served
        self.metrics.swaps.labels(model=self.name, alias=alias).inc()
        if served is not None:
            self.metrics.model_info.remove(*self._info_labels(served))
        self.metrics.model_info.labels(*self._info_labels(fresh)).set(1)
        log.info("%s@%s now v%s", self.name, alias, fresh.version)
        return fresh

    def _info_labels(self, served: ServedVersion) -> list[str]:
        return [self.name, served.alias, served.version, served.tag("method") or "dense",
                served.tag("pattern") or "dense", served.tag("sparsity") or "0"]  # fmt: skip

    # -------------------------------------------------------------- inference

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        from kserve import InferOutput, InferResponse
        from kserve.errors import InvalidInput, ModelNotReady

        served = self.current
        if served is None:
            raise ModelNotReady(self.name)
        batch = self._decode(payload, served, InvalidInput)
        if self.canary > 0 and self.challenger is not None and random.random() < self.canary:
            served = self.challenger
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(None, served.run, batch)
        if self.shadow and self.challenger is not None and served is not self.challenger:
            loop.run_in_executor(None, self._mirror, self.challenger, batch, result)
        if response_headers is not None:
            response_headers["x-pruneops-version"] = served.version
            response_headers["x-pruneops-alias"] = served.alias
        output = InferOutput(name=served.output_name, shape=list(result.shape), datatype="FP32")
        output.set_data_from_numpy(result.astype(np.float32), binary_data=False)
        return InferResponse(
            model_name=self.name,
            model_version=served.version,
            infer_outputs=[output],
            response_id=payload.id or str(uuid.uuid4()),
        )

    @staticmethod
    def _decode(payload: Any, served: ServedVersion, invalid: type[Exception]) -> np.ndarray:
        if len(payload.inputs) != 1:
            raise invalid(f"expected exactly 1 input tensor, got {len(payload.inputs)}")
        tensor = payload.inputs[0]
        if tensor.datatype != "FP32":
            raise invalid(f"input {tensor.name!r} has datatype {tensor.datatype}; this model takes FP32")
        expected = served.input_shape[1:]
        shape = list(tensor.shape)
        if len(shape) != len(expected) + 1 or any(
            e is not None and s != e for s, e in zip(shape[1:], expected, strict=False)
        ):
            want = ["N", *[e if e is not None else "?" for e in expected]]
            raise invalid(f"input shape {shape} does not match the model's {want}")
        if shape[0] < 1:
            raise invalid("input batch is empty")
        try:
            return np.ascontiguousarray(tensor.as_numpy(), dtype=np.float32)
        except (ValueError, TypeError) as err:
            raise invalid(f"input data does not fill shape {shape}: {err}") from None

    def _mirror(self, challenger: ServedVersion, batch: np.ndarray, champion_out: np.ndarray) -> None:
        try:
            out = challenger.run(batch)
        except Exception as err:  # noqa: BLE001 - a failing shadow never affects the response
            log.warning("shadow inference on v%s failed: %s", challenger.version, err)
            return
        agree = int((out.argmax(axis=-1) == champion_out.argmax(axis=-1)).sum())
        seen, matched = self._agreement
        self._agreement = (seen + len(batch), matched + agree)
        self.metrics.shadow_requests.labels(model=self.name, version=challenger.version).inc()
        self.metrics.shadow_agreement.labels(model=self.name, version=challenger.version).set(
            self._agreement[1] / self._agreement[0]
        )

    async def get_input_types(self) -> list[dict[str, Any]]:
        served = self.current
        if served is None:
            return []
        return [
            {
                "name": served.input_name,
                "datatype": "FP32",
                "shape": [d if d is not None else -1 for d in served.input_shape],
            }
        ]

    async def get_output_types(self) -> list[dict[str, Any]]:
        served = self.current
        return [] if served is None else [{"name": served.output_name, "datatype": "FP32", "shape": [-1, -1]}]


def follow(model: RegistryModel, interval: float, stop: threading.Event) -> threading.Thread:
    """Poll the registry every ``interval`` seconds on a daemon thread until ``stop`` is set."""

    def loop() -> None:
        while not stop.wait(interval):
            model.refresh()

    thread = threading.Thread(target=loop, name=f"follow-{model.name}", daemon=True)
    thread.start()
    return thread


def customise_app(model: RegistryModel, max_body: int = MAX_BODY_BYTES, secret: str | None = None) -> None:
    """Add pruneops's error handling, body limit and alias webhook to KServe's FastAPI app."""
    from kserve.model_server import app

    from pruneops.webhooks import SECRET_ENV, check

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"error": "request body is not valid JSON"}, status_code=400)
        where = ".".join(str(p) for p in errors[0].get("loc", [])) if errors else "body"
        message = errors[0].get("msg", "invalid") if errors else "invalid"
        return JSONResponse({"error": f"{where}: {message}"}, status_code=422)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        # V2's default encoding is JSON: a body sent without a content type (as some clients
        # do) is JSON unless the binary-extension header says otherwise.
        names = {k for k, _ in request.scope["headers"]}
        if b"content-type" not in names and b"inference-header-content-length" not in names:
            request.scope["headers"].append((b"content-type", b"application/json"))
        if await drained_if_oversized(request, max_body):
            return JSONResponse({"error": f"request body over {max_body} bytes"}, status_code=413)
        return await call_next(request)

    webhook_secret = secret if secret is not None else os.environ.get(SECRET_ENV, "")

    @app.post("/webhooks/mlflow")
    async def alias_webhook(request: Request) -> JSONResponse:
        body = await request.body()
        if not webhook_secret:
            return JSONResponse({"error": f"webhooks disabled: {SECRET_ENV} is not set"}, status_code=404)
        refused = check(request.headers, body, webhook_secret, 300)
        if refused:
            return JSONResponse({"error": refused}, status_code=401)
        try:
            event = json.loads(body)
            relevant = event["entity"] == "model_version_alias" and event["data"]["name"] == model.name
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "not an MLflow webhook payload"}, status_code=400)
        if relevant:
            threading.Thread(target=model.refresh, daemon=True).start()
        return JSONResponse({"status": "refreshing" if relevant else "ignored"}, status_code=202)


def serve(
    name: str,
    port: int = 8080,
    alias: str = CHAMPION,
    poll_interval: float = 5.0,
    canary: float = 0.0,
    shadow: bool = False,
    device: str = "cpu",
) -> None:
    """Run the model server until interrupted (KServe's ModelServer, REST only)."""
    from kserve import ModelServer

    model = RegistryModel(name, Registry(), ServerMetrics(), alias, canary, shadow, device)
    if not model.load():
        raise PruneopsError(f"{name}@{alias} could not be loaded; see the log above")
    customise_app(model)
    stop = threading.Event()
    follow(model, poll_interval, stop)
    started = time.monotonic()
    log.info("serving %s@%s v%s (loaded in %.1fs)", name, alias, model.current.version if model.current else "?",
             time.monotonic() - started)  # fmt: skip
    # Per-request latency logging costs milliseconds of CPU per request on a small model;
    # the sidecar measures latency, so the server does not log it too.
    for noisy in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False).start([model])
