"""The V2 model server: a KServe model that follows a registry alias, behind a closed HTTP surface.

``RegistryModel`` serves ``NAME@champion`` (or another alias) over the Open Inference
Protocol v2; :mod:`pruneops.serving.app` mounts only its public routes. A follower thread polls the
registry, and the signed MLflow ``model_version_alias.created`` webhook makes it look at
once. A new version is downloaded and verified against its recorded digests, loaded, warmed
up and checked on its probe (finite outputs, the shape clients get now, agreement with the
outputs recorded at registration) off the request path, then swapped in by replacing one
reference: requests already running finish on the version they started with. A version that
fails any step is refused once, counted in ``pruneops_model_load_failures_total{reason}``,
and never retried; the old version keeps serving. If the served model ever goes missing
from the server's repository, the follower puts it back. The version last replaced stays
loaded (one, at the cost of its memory), and so does the challenger: a rollback to the
previous version, or the challenger's promotion, is a swap with no download.

Optional challenger: ``canary`` sends that fraction of requests to ``NAME@challenger``;
``shadow`` answers from the champion, mirrors each request to the challenger off the
response path, and exports ``pruneops_shadow_agreement_ratio`` (same top class).

Responses carry ``x-pruneops-version`` and ``x-pruneops-alias`` headers, which the sidecar
uses as metric labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import random
import threading
import time
import uuid
from typing import Any

import numpy as np

from pruneops.errors import (
    IntegrityError,
    ModelFormatError,
    ProbeMismatch,
    PruneopsError,
    RegistryError,
    RuntimeUnavailable,
    UntrustedCodeError,
)
from pruneops.monitoring.metrics import ServerMetrics
from pruneops.registry import CHALLENGER, CHAMPION, Registry
from pruneops.serving.loader import ServedVersion, load_version

log = logging.getLogger("pruneops.serving")

#: Set by a ``/versions/{v}/infer`` route: the request is answered by that version, not by the canary draw.
PINNED: contextvars.ContextVar[str | None] = contextvars.ContextVar("pruneops_pinned_version", default=None)
#: Rows one request may carry; bounds the work (and the latency of everyone else) one client can cause.
DEFAULT_MAX_BATCH = 1024


def _kserve_model_base() -> type:
    from kserve import Model

    return Model


def failure_reason(err: BaseException) -> str:
    """The bounded ``reason`` label of a refused version.

    >>> failure_reason(UntrustedCodeError("x")), failure_reason(ProbeMismatch("x"))
    ('untrusted_code', 'smoke_test')
    """
    for kind, reason in (
        (UntrustedCodeError, "untrusted_code"),
        (IntegrityError, "integrity"),
        (ProbeMismatch, "smoke_test"),
        (RuntimeUnavailable, "runtime_unavailable"),
        (ModelFormatError, "invalid_model"),
        (RegistryError, "registry"),
    ):
        if isinstance(err, kind):
            return reason
    return "error"


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
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        # return_response_headers: KServe passes predict() a dict whose entries become headers.
        super().__init__(name, return_response_headers=True)
        self.registry, self.metrics, self.alias = registry, metrics, alias
        self.canary, self.shadow, self.device, self.max_batch = canary, shadow, device, max_batch
        self.current: ServedVersion | None = None
        self.challenger: ServedVersion | None = None
        self._standby: ServedVersion | None = None  # the version last replaced on ``alias``
        self.repository: Any = None  # KServe's ModelRepository serving this model (set by pruneops.serving.app)
        self._refresh_lock = threading.Lock()
        self._agreement_lock = threading.Lock()
        self._agreement: dict[str, tuple[int, int]] = {}  # challenger version -> (rows seen, rows agreeing)
        self._refused: dict[str, str] = {}  # version -> reason; a refused version is never tried again
        self._retrying: set[str] = set()  # versions the registry failed to hand over; tried each poll, counted once

    # -------------------------------------------------------------- following the registry

    def load(self) -> bool:
        self.refresh()
        return bool(self.ready)

    def refresh(self) -> None:
        """Bring the served versions in line with the registry's aliases (one refresh at a time)."""
        with self._refresh_lock:
            self.current = self._follow(self.alias, self.current)
            if self.canary > 0 or self.shadow:
                self.challenger = self._follow(CHALLENGER, self.challenger, optional=True)
            self._restore()

    def serving(self) -> list[ServedVersion]:
        """The versions answering now: the followed alias first, then the challenger."""
        return [v for v in (self.current, self.challenger) if v is not None]

    def served(self, version: str) -> ServedVersion | None:
        """The served version numbered ``version`` (``"3"`` or ``"v3"``), if any."""
        wanted = version.removeprefix("v")
        return next((v for v in self.serving() if v.version == wanted), None)

    def _restore(self) -> None:
        """Put the model back in the server's repository and readiness right, whatever removed it."""
        self.ready = self.current is not None
        if self.repository is not None and self.repository.get_model(self.name) is not self:
            self.repository.update(self)
            self.metrics.restores.labels(model=self.name).inc()
            log.warning("%s was missing from the server's model repository; restored", self.name)

    def _follow(self, alias: str, served: ServedVersion | None, optional: bool = False) -> ServedVersion | None:
        try:
            target = self.registry.alias_version(self.name, alias)
        except PruneopsError as err:
            log.warning("cannot read aliases of %s: %s", self.name, err)
            return served
        if target is None:
            if not optional:
                log.warning("%s has no alias %s", self.name, alias)
            return None if optional else served
        if served is not None and served.version == target:
            return served
        if target in self._refused:
            return None if optional else served
        interface = self.current.output_shape if self.current is not None else None
        try:
            fresh = self._loaded(target, alias, interface) or load_version(
                self.registry, self.name, target, alias, device=self.device, output_shape=interface
            )
        except Exception as err:  # noqa: BLE001 - any failure keeps the old version serving
            reason = failure_reason(err)
            if reason != "registry":  # an unreachable registry is tried again; a bad version is not
                self._refused[target] = reason
            elif target in self._retrying:  # the same outage, seen again on this poll: counted already
                return None if optional else served
            else:
                self._retrying.add(target)
            self.metrics.load_failures.labels(model=self.name, reason=reason).inc()
            log.error("refusing %s v%s (%s): %s; still serving %s", self.name, target, alias, err,
                      f"v{served.version}" if served else "nothing")  # fmt: skip
            return None if optional else served
        self._retrying.discard(target)
        self.metrics.swaps.labels(model=self.name, alias=alias).inc()
        if served is not None:
            self.metrics.model_info.remove(*self._info_labels(served))
        if alias == self.alias and served is not None:
            self._standby = served  # the version a rollback returns to, kept loaded
        if alias == CHALLENGER:
            self._reset_agreement(fresh.version)
        self.metrics.model_info.labels(*self._info_labels(fresh)).set(1)
        log.info("%s@%s now v%s (batches up to %d rows run on the event loop)", self.name, alias, fresh.version,
                 fresh.inline_rows)  # fmt: skip
        return fresh

    def _loaded(self, version: str, alias: str, interface: tuple[int, ...] | None) -> ServedVersion | None:
        """``version`` if this server holds it loaded already (the challenger being promoted, or
        the version just replaced, which a rollback returns to): swapped in without a download.

        It was verified, warmed up and smoke-tested when it was loaded; it must still give
        clients the outputs they get now.
        """
        for held in (self.current, self.challenger, self._standby):
            if held is not None and held.version == version and (interface is None or held.output_shape == interface):
                log.info("%s v%s is loaded already: swapping it in as %s without a download", self.name, version, alias)
                return dataclasses.replace(held, alias=alias)
        return None

    def _info_labels(self, served: ServedVersion) -> list[str]:
        return [self.name, served.alias, served.version, served.tag("method") or "dense",
                served.tag("pattern") or "dense", served.tag("sparsity") or "0"]  # fmt: skip

    # -------------------------------------------------------------- inference

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        from kserve import InferOutput, InferResponse
        from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady

        served = self.current
        if served is None:
            raise ModelNotReady(self.name)
        pinned = PINNED.get()
        if pinned is not None:
            served = self.served(pinned)
            if served is None:  # swapped away between the route's check and now
                raise ModelNotFound(f"{self.name} v{pinned}")
        batch = self._decode(payload, served, InvalidInput)
        if pinned is None and self.canary > 0 and self.challenger is not None and random.random() < self.canary:
            served = self.challenger
        loop = asyncio.get_running_loop()
        try:
            if len(batch) <= served.inline_rows:  # cheaper than the thread hop; see INLINE_BUDGET_S
                result = served.run(batch)
            else:
                result = await loop.run_in_executor(None, served.run, batch)
        except Exception as err:
            # ONNX Runtime's InvalidArgument: the input's values (a token id out of range), the client's fault.
            if type(err).__name__ == "InvalidArgument":
                reason = str(err).rsplit("Status Message: ", 1)[-1]
                raise InvalidInput(f"the model refused the input: {reason}") from None
            raise
        if pinned is None and self.shadow and self.challenger is not None and served is not self.challenger:
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

    def _decode(self, payload: Any, served: ServedVersion, invalid: type[Exception]) -> np.ndarray:
        if len(payload.inputs) != 1:
            raise invalid(f"expected exactly 1 input tensor, got {len(payload.inputs)}")
        tensor = payload.inputs[0]
        if tensor.datatype != served.input_datatype:
            wanted = served.input_datatype
            raise invalid(f"input {tensor.name!r} has datatype {tensor.datatype}; this model takes {wanted}")
        expected = served.input_shape[1:]
        shape = list(tensor.shape)
        if len(shape) != len(expected) + 1 or any(
            e is not None and s != e for s, e in zip(shape[1:], expected, strict=False)
        ):
            want = ["N", *[e if e is not None else "?" for e in expected]]
            raise invalid(f"input shape {shape} does not match the model's {want}")
        if shape[0] < 1:
            raise invalid("input batch is empty")
        if shape[0] > self.max_batch:
            raise invalid(f"input batch of {shape[0]} rows is over this server's limit of {self.max_batch}")
        try:
            batch = np.ascontiguousarray(tensor.as_numpy(), dtype=served.input_dtype)
        except (ValueError, TypeError) as err:
            raise invalid(f"input data does not fill shape {shape}: {err}") from None
        if not np.isfinite(batch).all():
            raise invalid(f"input {tensor.name!r} holds NaN or infinity")
        return batch

    def _mirror(self, challenger: ServedVersion, batch: np.ndarray, champion_out: np.ndarray) -> None:
        try:
            out = challenger.run(batch)
        except Exception as err:  # noqa: BLE001 - a failing shadow never affects the response
            log.warning("shadow inference on v%s failed: %s", challenger.version, err)
            return
        agree = int((out.argmax(axis=-1) == champion_out.argmax(axis=-1)).sum())
        with self._agreement_lock:  # mirrors run on several executor threads at once
            seen, matched = self._agreement.get(challenger.version, (0, 0))
            seen, matched = seen + len(batch), matched + agree
            self._agreement[challenger.version] = (seen, matched)
        self.metrics.shadow_requests.labels(model=self.name, version=challenger.version).inc()
        self.metrics.shadow_agreement.labels(model=self.name, version=challenger.version).set(matched / seen)

    def _reset_agreement(self, version: str) -> None:
        """A new challenger starts its agreement from nothing; the old one's series goes."""
        with self._agreement_lock:
            for old in [v for v in self._agreement if v != version]:
                del self._agreement[old]
                for gauge in (self.metrics.shadow_agreement, self.metrics.shadow_requests):
                    with contextlib.suppress(KeyError):
                        gauge.remove(self.name, old)
            self._agreement[version] = (0, 0)

    async def get_input_types(self) -> list[dict[str, Any]]:
        served = self.current
        if served is None:
            return []
        return [
            {
                "name": served.input_name,
                "datatype": served.input_datatype,
                "shape": [d if d is not None else -1 for d in served.input_shape],
            }
        ]

    async def get_output_types(self) -> list[dict[str, Any]]:
        served = self.current
        if served is None:
            return []
        return [{"name": served.output_name, "datatype": "FP32", "shape": [-1, *served.output_shape]}]


def follow(model: RegistryModel, interval: float, stop: threading.Event) -> threading.Thread:
    """Poll the registry every ``interval`` seconds on a daemon thread until ``stop`` is set.

    >>> import tempfile, torch
    >>> from prometheus_client import CollectorRegistry
    >>> from pruneops.modelio import ArchSpec, save_model
    >>> from pruneops.probe import CLASSES, record
    >>> registry = Registry("sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    >>> spec = ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 3})
    >>> for _ in range(2):
    ...     model = torch.nn.Linear(4, 3)
    ...     folder = save_model(model, tempfile.mkdtemp(), spec, record(model, torch.randn(5, 4), CLASSES))
    ...     _ = registry.register("linear", folder)
    >>> _ = registry.set_alias("linear", CHAMPION, "1")
    >>> served = RegistryModel("linear", registry, ServerMetrics(CollectorRegistry()))
    >>> served.load(), served.current.version
    (True, '1')
    >>> stop = threading.Event()
    >>> thread = follow(served, 0.2, stop)
    >>> _ = registry.promote("linear", "2", why="example")  # an alias flip in the registry
    >>> deadline = time.monotonic() + 30
    >>> while served.current.version != "2" and time.monotonic() < deadline:
    ...     time.sleep(0.1)
    >>> served.current.version
    '2'
    >>> stop.set(); thread.join()
    """

    def loop() -> None:
        while not stop.wait(interval):
            model.refresh()

    thread = threading.Thread(target=loop, name=f"follow-{model.name}", daemon=True)
    thread.start()
    return thread


def serve(
    name: str,
    port: int = 8080,
    alias: str = CHAMPION,
    poll_interval: float = 5.0,
    canary: float = 0.0,
    shadow: bool = False,
    device: str = "cpu",
    host: str = "127.0.0.1",
    max_batch: int = DEFAULT_MAX_BATCH,
    max_connections: int = 512,
) -> None:
    """Run the model server until SIGTERM or SIGINT (uvicorn, one process).

    ``host`` is loopback by default; a pod listens on ``0.0.0.0`` (the chart sets it).
    ``max_connections`` bounds connections and requests at once; past it uvicorn answers 503.
    Keep it above the sidecar's ``--max-in-flight`` so that traffic through the sidecar is
    never refused here.

    >>> import os, subprocess, sys, tempfile, httpx, torch
    >>> from pruneops.modelio import ArchSpec, save_model
    >>> from pruneops.monitoring.localstack import free_port, wait_http
    >>> from pruneops.probe import CLASSES, record
    >>> uri, port = "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db", free_port()
    >>> model, spec = torch.nn.Linear(4, 3), ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 3})
    >>> folder = save_model(model, tempfile.mkdtemp(), spec, record(model, torch.randn(5, 4), CLASSES))
    >>> _ = Registry(uri).register("linear", folder)
    >>> _ = Registry(uri).set_alias("linear", CHAMPION, "1")
    >>> code = f"from pruneops.serving.server import serve; serve('linear', port={port})"
    >>> env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    >>> server = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    >>> wait_http(f"http://127.0.0.1:{port}/v2/health/ready", server, timeout=120)
    >>> body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    >>> httpx.post(f"http://127.0.0.1:{port}/v2/models/linear/infer", json=body).json()["model_version"]
    '1'
    >>> server.terminate(); server.wait()  # uvicorn shuts down, then exits by the signal it got
    -15
    """
    import uvicorn

    from pruneops.serving.app import create_app
    from pruneops.uvicorn_limits import http_protocol

    started = time.monotonic()
    model = RegistryModel(name, Registry(), ServerMetrics(), alias, canary, shadow, device, max_batch)
    if not model.load():
        raise PruneopsError(f"{name}@{alias} could not be loaded; see the log above")
    app = create_app(model)
    stop = threading.Event()
    follow(model, poll_interval, stop)
    log.info("serving %s@%s v%s on %s:%d (ready in %.1fs)", name, alias,
             model.current.version if model.current else "?", host, port, time.monotonic() - started)  # fmt: skip
    # Per-request access logs cost milliseconds of CPU per request on a small model; the
    # sidecar measures latency, so the server does not log each request too.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,  # "server: uvicorn" names the software to anyone who asks
        limit_concurrency=max_connections,
        timeout_keep_alive=65,  # longer than the sidecar's pool keeps idle connections
        h11_max_incomplete_event_size=64 * 1024,
        http=http_protocol(),  # httptools with a bound on request heads (uvicorn has none there)
    )
    try:
        uvicorn.Server(config).run()
    finally:
        stop.set()
