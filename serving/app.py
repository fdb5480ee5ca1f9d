"""The model server's HTTP app: the V2 routes of :mod:`pruneops.serving.routes`, and nothing else public.

KServe's own REST server also mounts its model repository (``/v2/repository/models/{name}/load``
and ``/unload``), the V1 protocol and more; one anonymous POST to ``unload`` stopped every
inference. This app is built from KServe's data plane and V2 handlers (so the protocol,
its JSON and binary encodings and its error bodies are KServe's own) but mounts only:

- the public V2 routes: server metadata, live, ready, model metadata, model ready and infer,
  each also under ``/versions/{v}``, which answers for a version being served now (the
  champion, or the challenger) and 404 for any other;
- ``GET /metrics``: the server's own metrics (loads, swaps, refusals, shadow agreement);
- ``POST /webhooks/mlflow``: MLflow's alias webhook, signed, deduplicated by delivery id.

An inference body is V2 JSON unless an ``Inference-Header-Content-Length`` header marks the
binary extension, whatever its ``Content-Type`` says (:class:`JsonUnlessBinary`): ``curl -d``
sends JSON as a form, which KServe alone reads as bytes.

Bodies are bounded by :class:`pruneops.asgi.BodyLimit` before any handler runs: 8 MiB for
inference (chunked uploads counted too), 1 MiB for the webhook, a shared budget for all.
Client errors get 4xx with ``{"error": ...}``: malformed JSON 400, a body that does not
parse as V2 422, wrong shape, datatype, size or a non-finite number 400, unknown model or
version 404, oversized body 413.

Usage (needs a registry)::

    app = create_app(RegistryModel("digits", Registry(), ServerMetrics()))
"""

# No ``from __future__ import annotations``: FastAPI reads the route annotations at run time.
import json
import os
import threading
from typing import Any, Union

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import errors
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from kserve.protocol.rest.v2_endpoints import V2Endpoints

from pruneops.asgi import MAX_BODY_BYTES, WEBHOOK_BODY_BYTES, BodyLimit
from pruneops.serving.server import PINNED, RegistryModel
from pruneops.webhooks import DELIVERY, SECRET_ENV, SeenDeliveries, check

WEBHOOK_PATH = "/webhooks/mlflow"
INFER_HEADER = b"inference-header-content-length"  # the V2 binary extension's marker


def create_app(model: RegistryModel, secret: str | None = None, max_body: int = MAX_BODY_BYTES) -> Any:
    """The ASGI app serving ``model``: KServe's V2 handlers on the closed route list, bodies bounded.

    >>> import tempfile, torch
    >>> from fastapi.testclient import TestClient
    >>> from prometheus_client import CollectorRegistry
    >>> from pruneops.modelio import ArchSpec, save_model
    >>> from pruneops.monitoring.metrics import ServerMetrics
    >>> from pruneops.probe import CLASSES, record
    >>> from pruneops.registry import Registry
    >>> registry = Registry("sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    >>> model, spec = torch.nn.Linear(4, 3), ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 3})
    >>> folder = save_model(model, tempfile.mkdtemp(), spec, record(model, torch.randn(5, 4), CLASSES))
    >>> _ = registry.register("linear", folder)
    >>> _ = registry.set_alias("linear", "champion", "1")
    >>> served = RegistryModel("linear", registry, ServerMetrics(CollectorRegistry()))  # follows champion
    >>> served.load()
    True
    >>> client = TestClient(create_app(served))
    >>> body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    >>> reply = client.post("/v2/models/linear/infer", json=body)
    >>> reply.status_code, reply.headers["x-pruneops-version"], reply.json()["outputs"][0]["shape"]
    (200, '1', [1, 3])
    >>> client.post("/v2/repository/models/linear/unload").status_code  # not on the closed route list
    404
    """
    repository = ModelRepository()
    repository.update(model)
    model.repository = repository
    endpoints = V2Endpoints(DataPlane(model_registry=repository), None)
    app = FastAPI(title="pruneops model server", docs_url=None, redoc_url=None, openapi_url=None)

    def not_served(name: str, version: str) -> JSONResponse | None:
        if name == model.name and model.served(version) is not None:
            return None
        if name != model.name:
            return JSONResponse({"error": f"Model with name {name} does not exist."}, status_code=404)
        serving = ", ".join(f"v{v.version} ({v.alias})" for v in model.serving()) or "nothing"
        return JSONResponse({"error": f"version {version} of {name} is not served here (serving {serving})"}, 404)

    async def model_metadata(model_name: str, model_version: str) -> Any:
        return not_served(model_name, model_version) or await endpoints.model_metadata(model_name)

    async def model_ready(model_name: str, model_version: str) -> Any:
        return not_served(model_name, model_version) or await endpoints.model_ready(model_name)

    async def infer_version(
        raw_request: Request,
        raw_response: Response,
        model_name: str,
        model_version: str,
        request_body: Union[InferenceRequest, bytes],  # noqa: UP007 - KServe's own annotation, read by FastAPI
    ) -> Any:
        refused = not_served(model_name, model_version)
        if refused is not None:
            return refused
        token = PINNED.set(model_version)
        try:
            return await endpoints.infer(raw_request, raw_response, model_name, request_body)
        finally:
            PINNED.reset(token)

    get = ["GET", "HEAD"]
    app.add_api_route("/v2", endpoints.metadata, methods=get)
    app.add_api_route("/v2/health/live", endpoints.live, methods=get)
    app.add_api_route("/v2/health/ready", endpoints.ready, methods=get)
    app.add_api_route("/v2/models/{model_name}", endpoints.model_metadata, methods=get)
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}", model_metadata, methods=get)
    app.add_api_route("/v2/models/{model_name}/ready", endpoints.model_ready, methods=get)
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/ready", model_ready, methods=get)
    app.add_api_route("/v2/models/{model_name}/infer", endpoints.infer, methods=["POST"], response_model=None)
    app.add_api_route(
        "/v2/models/{model_name}/versions/{model_version}/infer", infer_version, methods=["POST"], response_model=None
    )
    app.add_api_route("/metrics", _metrics, methods=["GET"])
    _add_webhook(app, model, secret if secret is not None else os.environ.get(SECRET_ENV, ""))
    _add_error_handlers(app)
    return BodyLimit(JsonUnlessBinary(app), limit=max_body, limits={"/webhooks/": WEBHOOK_BODY_BYTES})


class JsonUnlessBinary:
    """Plain ASGI: an inference request without ``Inference-Header-Content-Length`` is JSON.

    That is the V2 protocol's rule; KServe decides by ``Content-Type`` instead, so a JSON body
    sent as ``application/x-www-form-urlencoded`` (``curl -d``) or ``text/plain`` got "received
    byte inputs, but the 'inference-header-content-length' header is missing".

    >>> import asyncio
    >>> seen = []
    >>> async def app(scope, receive, send):
    ...     seen.append(dict(scope["headers"])[b"content-type"])
    >>> scope = {"type": "http", "method": "POST", "path": "/v2/models/m/infer",
    ...          "headers": [(b"content-type", b"application/x-www-form-urlencoded")]}
    >>> asyncio.run(JsonUnlessBinary(app)(scope, None, None)); seen
    [b'application/json']
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/infer"):
            headers = scope["headers"]
            kinds = {key: value for key, value in headers if key in (b"content-type", INFER_HEADER)}
            if INFER_HEADER not in kinds and not kinds.get(b"content-type", b"").startswith(b"application/json"):
                json_type = [(key, value) for key, value in headers if key != b"content-type"]
                scope = {**scope, "headers": [*json_type, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


async def _metrics() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _add_webhook(app: FastAPI, model: RegistryModel, secret: str) -> None:
    """MLflow's ``model_version_alias.created`` makes the server look at the registry at once."""
    seen = SeenDeliveries()

    @app.post(WEBHOOK_PATH)
    async def alias_webhook(request: Request) -> JSONResponse:
        body = await request.body()  # bounded by BodyLimit before this runs
        if not secret:
            return JSONResponse({"error": f"webhooks disabled: {SECRET_ENV} is not set"}, status_code=404)
        refused = check(request.headers, body, secret, 300)
        if refused:
            return JSONResponse({"error": refused}, status_code=401)
        if not seen.claim(request.headers[DELIVERY]):
            return JSONResponse({"error": f"delivery {request.headers[DELIVERY]} was already received"}, 409)
        try:
            event = json.loads(body)
            relevant = event["entity"] == "model_version_alias" and event["data"]["name"] == model.name
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "not an MLflow webhook payload"}, status_code=400)
        if relevant:
            threading.Thread(target=model.refresh, daemon=True).start()
        return JSONResponse({"status": "refreshing" if relevant else "ignored"}, status_code=202)


def _add_error_handlers(app: FastAPI) -> None:
    """KServe's error types to their statuses, and FastAPI's body errors to 400/422 with ``{"error": ...}``."""
    app.add_exception_handler(errors.InvalidInput, errors.invalid_input_handler)
    app.add_exception_handler(errors.InferenceError, errors.inference_error_handler)
    app.add_exception_handler(errors.ModelNotFound, errors.model_not_found_handler)
    app.add_exception_handler(errors.ModelNotReady, errors.model_not_ready_handler)
    app.add_exception_handler(errors.ServerNotLive, errors.server_not_live_handler)
    app.add_exception_handler(errors.ServerNotReady, errors.server_not_ready_handler)
    app.add_exception_handler(errors.UnsupportedProtocol, errors.unsupported_protocol_error_handler)
    app.add_exception_handler(NotImplementedError, errors.not_implemented_error_handler)
    app.add_exception_handler(Exception, errors.generic_exception_handler)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        found = exc.errors()
        if any(e.get("type") == "json_invalid" for e in found):
            return JSONResponse({"error": "request body is not valid JSON"}, status_code=400)
        where = ".".join(str(p) for p in found[0].get("loc", [])) if found else "body"
        message = found[0].get("msg", "invalid") if found else "invalid"
        return JSONResponse({"error": f"{where}: {message}"}, status_code=422)

    @app.exception_handler(404)
    async def not_found(request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"no route {request.url.path}; this server answers V2 inference only"}, 404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"{request.method} is not allowed on {request.url.path}"}, 405)
