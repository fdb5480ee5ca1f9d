"""A rollback drill: put a latency regression into production on purpose and time the way back.

The regression is a registered version whose ONNX graph answers exactly what its parent
answers but does ``matmuls`` extra 512x512 matrix products per request, input-dependent so
ONNX Runtime cannot fold them away: a stand-in for a bad export that passed offline checks.
It is registered with ``source=drill`` and promoted like a human bypassing analysis would;
the rules' ``PruneopsLatencyRegression`` alert then has to fire, Alertmanager has to call the
controller, the controller has to roll back, and the server has to serve ``previous`` again.

Used by ``pruneops demo`` (its monitoring stage) and by the closed-loop integration test.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from pruneops.export import export_registered
from pruneops.mlmodel import ONNX_FILE
from pruneops.monitoring.localstack import LocalStack
from pruneops.monitoring.prom import PromQuery
from pruneops.registry import Registry

DRILL_SOURCE = "drill"


def slow_onnx(source: str | Path, target: str | Path, matmuls: int = 4, size: int = 512) -> Path:
    """Copy an ONNX model, adding ``matmuls`` input-dependent ``size``-square products whose result is x0.

    >>> import torch
    >>> from pruneops.export import export_onnx, onnx_outputs
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = export_onnx(torch.nn.Linear(4, 3), torch.randn(2, 4), folder / "model.onnx")
    >>> slow = slow_onnx(folder / "model.onnx", folder / "slow.onnx", matmuls=2, size=64)
    >>> inputs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    >>> np.array_equal(onnx_outputs(slow, inputs), onnx_outputs(folder / "model.onnx", inputs))  # x0, exactly
    True
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    output = graph.output[0].name
    rng = np.random.default_rng(0)
    weight = (rng.normal(size=(size, size)) / np.sqrt(size)).astype(np.float32)
    graph.initializer.extend(
        [numpy_helper.from_array(weight, "drill_w"), numpy_helper.from_array(np.zeros((), np.float32), "drill_zero")]
    )
    for node in graph.node:  # the old output becomes an intermediate value
        node.output[:] = ["drill_original" if name == output else name for name in node.output]
    nodes = [
        helper.make_node("ReduceMean", [graph.input[0].name], ["drill_scale"], keepdims=0),
        helper.make_node("Mul", ["drill_w", "drill_scale"], ["drill_0"]),
    ]
    for index in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"drill_{index}", "drill_w"], [f"drill_{index + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"drill_{matmuls}"], ["drill_sum"], keepdims=0),
        helper.make_node("Mul", ["drill_sum", "drill_zero"], ["drill_nothing"]),
        helper.make_node("Add", ["drill_original", "drill_nothing"], [output]),
    ]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return Path(target)


def register_copy(
    registry: Registry,
    model: str,
    parent: str,
    tags: dict[str, str],
    prepare: Callable[[Path], None] | None = None,
) -> str:
    """Register ``parent``'s files again, with its tags updated by ``tags`` and its reference sample.

    ``prepare`` may change the downloaded model folder first. Returns the new version.

    >>> from pruneops.modelio import build_model
    >>> from pruneops.onboard import register_source
    >>> from pruneops.tasks.digits import task
    >>> registry = Registry("sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    >>> _ = register_source(registry, "digits", build_model(task.arch), task.arch, task, "pruneops.tasks.digits:task")
    >>> register_copy(registry, "digits", "1", {"parent_version": "1"})
    '2'
    >>> copy = registry.version("digits", "2")
    >>> copy.tag("parent_version"), copy.tag("task"), copy.aliases
    ('1', 'pruneops.tasks.digits:task', ())
    """
    info = registry.version(model, parent)
    reference = registry.load_reference(model, parent)
    with tempfile.TemporaryDirectory() as tmp:
        folder = registry.download(model, parent, tmp)
        if prepare is not None:
            prepare(folder)
        merged = {k: v for k, v in info.short_tags().items() if k != "promoted_at"} | tags
        return registry.register(
            model, folder, tags=merged, reference=reference.to_numpy(), feature_names=list(reference.columns)
        ).version


def register_regression(registry: Registry, model: str, parent: str, matmuls: int = 4) -> str:
    """Register ``parent`` again with a slowed-down ``model.onnx``; returns the new version.

    >>> from pruneops.modelio import build_model
    >>> from pruneops.onboard import register_source
    >>> from pruneops.tasks.digits import task
    >>> registry = Registry("sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    >>> _ = register_source(registry, "digits", build_model(task.arch), task.arch, task, "pruneops.tasks.digits:task")
    >>> version = register_regression(registry, "digits", "1", matmuls=2)
    >>> regressed = registry.version("digits", version)
    >>> version, regressed.tag("source"), regressed.tag("gate"), regressed.aliases
    ('2', 'drill', 'passed', ())
    """
    task_path = registry.version(model, parent).tag("task")

    def slow_down(folder: Path) -> None:
        onnx_path = folder / ONNX_FILE
        if not onnx_path.is_file():  # a baseline registered without ONNX: export it as the server would
            export_registered(folder, task_path, onnx_path)
        slow_onnx(onnx_path, onnx_path, matmuls)

    tags = {"source": DRILL_SOURCE, "parent_version": parent, "gate": "passed", "runtime": "onnxruntime"}
    return register_copy(registry, model, parent, tags, slow_down)


@dataclass
class Traffic:
    """A background client sending V2 infer requests at about ``rate`` per second to ``url``.

    Each request carries one row of ``inputs`` in turn (real task data, so that drift
    stays low until something changes).
    """

    url: str
    model: str
    inputs: np.ndarray
    rate: float = 20.0
    versions: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, version served)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Traffic:
        threading.Thread(target=self._loop, name="drill-traffic", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        shape = [1, *self.inputs.shape[1:]]
        bodies = [
            {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": row.ravel().tolist()}]}
            for row in self.inputs.astype(np.float32)
        ]
        with httpx.Client(timeout=10) as client:
            sent = 0
            while not self._stop.wait(1.0 / self.rate):
                body, sent = bodies[sent % len(bodies)], sent + 1
                try:
                    reply = client.post(f"{self.url}/v2/models/{self.model}/infer", json=body)
                except httpx.HTTPError:
                    self.failures += 1
                    continue
                if reply.status_code != 200:
                    self.failures += 1
                    continue
                self.versions.append((time.monotonic(), reply.headers.get("x-pruneops-version", "?")))

    def first_served(self, version: str, after: float = 0.0) -> float | None:
        """When ``version`` first answered a request after ``after`` (monotonic), or None."""
        return next((t for t, v in list(self.versions) if v == version and t >= after), None)

    def wait_for(self, version: str, after: float, timeout: float) -> float | None:
        """Wait until ``version`` answers a request sent after ``after``; returns that time or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.first_served(version, after)
            if found is not None:
                return found
            time.sleep(0.2)
        return None


@dataclass(frozen=True)
class DrillResult:
    """Timings of one drill, in seconds from the first request the regressed version answered."""

    regressed: str
    restored: str
    rollback_why: str | None
    breach_to_rollback_s: float | None
    breach_to_served_s: float | None
    failed_requests: int


def run_drill(
    registry: Registry, model: str, traffic: Traffic, timeout: float = 90.0, matmuls: int = 24
) -> DrillResult:
    """Promote a regressed copy of the champion and time the loop until the champion serves again.

    In the stack, the latency alert makes the controller roll back; here a model server
    follows a registry on its own, and a person rolls back once the regression serves:

    >>> import subprocess, sys
    >>> from pruneops.modelio import build_model
    >>> from pruneops.monitoring.localstack import free_port, wait_http
    >>> from pruneops.onboard import register_source
    >>> from pruneops.tasks.digits import task
    >>> uri, port = "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db", free_port()
    >>> registry = Registry(uri)
    >>> _ = register_source(registry, "digits", build_model(task.arch), task.arch, task, "pruneops.tasks.digits:task")
    >>> code = f"from pruneops.serving.server import serve; serve('digits', port={port}, poll_interval=0.5)"
    >>> env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    >>> server = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    >>> wait_http(f"http://127.0.0.1:{port}/v2/health/ready", server, timeout=120)
    >>> traffic = Traffic(f"http://127.0.0.1:{port}", "digits", task.example_input(20).numpy()).start()
    >>> def person():  # rolls back as soon as the regressed version (v2) answers
    ...     if traffic.wait_for("2", 0.0, 60) is not None:
    ...         registry.rollback("digits", why="p99 doubled on the dashboard")
    >>> threading.Thread(target=person).start()
    >>> result = run_drill(registry, "digits", traffic, timeout=60, matmuls=2)
    >>> traffic.stop(); server.terminate(); _ = server.wait()
    >>> result.regressed, result.restored, result.rollback_why, result.failed_requests
    ('2', '1', 'p99 doubled on the dashboard', 0)
    >>> result.breach_to_served_s > result.breach_to_rollback_s > 0
    True
    """
    good = registry.aliases(model)["champion"]
    bad = register_regression(registry, model, good, matmuls)
    promoted_at = time.monotonic()
    registry.promote(model, bad, why="drill: injected latency regression")
    breach = traffic.wait_for(bad, promoted_at, timeout)
    if breach is None:
        raise TimeoutError(f"v{bad} never served within {timeout:g}s of its promotion")
    restored = traffic.wait_for(good, breach, timeout)
    events = [e for e in registry.history(model) if e.action == "rollback" and e.version == good]
    rollback_at = _monotonic_of(events[-1].at) if events else None
    return DrillResult(
        regressed=bad,
        restored=good,
        rollback_why=events[-1].why if events else None,
        breach_to_rollback_s=rollback_at - breach if rollback_at is not None else None,
        breach_to_served_s=restored - breach if restored is not None else None,
        failed_requests=traffic.failures,
    )


def _monotonic_of(iso: str) -> float:
    """Map a registry event's wall-clock ISO time onto this process's monotonic clock."""
    from datetime import datetime

    return time.monotonic() - (time.time() - datetime.fromisoformat(iso).timestamp())


def wait_for_p99(prometheus: PromQuery, model: str, version: str, timeout: float) -> None:
    """Wait until Prometheus has ``version``'s 1h p99 (the regression alert's baseline).

    Returns once the recording rule has a value; raises ``TimeoutError`` when none appears
    within ``timeout``. Against a real Prometheus that has seen no traffic:

    >>> import subprocess
    >>> from pruneops.monitoring.localstack import binaries, free_port, wait_http
    >>> folder, port = Path(tempfile.mkdtemp()), free_port()
    >>> _ = (folder / "prometheus.yml").write_text("global: {scrape_interval: 5s}")
    >>> prometheus = subprocess.Popen(
    ...     [binaries()[0], f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
    ...      f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    >>> wait_http(f"http://127.0.0.1:{port}/-/ready", prometheus)
    >>> wait_for_p99(PromQuery(f"http://127.0.0.1:{port}"), "digits", "2", timeout=1)
    Traceback (most recent call last):
    ...
    TimeoutError: Prometheus had no p99 for digits v2 within 1s
    >>> prometheus.terminate(); _ = prometheus.wait()
    """
    query = f'model_version:pruneops_request_duration_seconds:p99_1h{{model="{model}",version="{version}"}}'
    deadline = time.monotonic() + timeout
    while not prometheus.vector(query):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus had no p99 for {model} v{version} within {timeout:g}s")
        time.sleep(0.5)


@dataclass(frozen=True)
class LoopReport:
    """What the closed loop did: the analysis promotion (if there was a challenger) and the drill."""

    promoted: str | None
    promotion_s: float | None
    drill: DrillResult


def closed_loop(
    model: str,
    workdir: Path,
    inputs: np.ndarray,
    env: dict[str, str] | None = None,
    while_up: Callable[[LocalStack], None] | None = None,
    timeout: float = 120.0,
) -> LoopReport:
    """Start the local stack, let analysis promote the challenger (if any), then run the drill.

    ``while_up`` is called with the running stack after the drill (tests check dashboards there).

    With the real binaries (Prometheus, Alertmanager) and pruneops' own processes, on a model
    with no challenger (so no promotion first), about a minute on two cores:

    >>> from pruneops.modelio import build_model
    >>> from pruneops.onboard import register_source
    >>> from pruneops.tasks.digits import task
    >>> os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db"
    >>> _ = register_source(Registry(), "digits", build_model(task.arch), task.arch, task, "pruneops.tasks.digits:task")
    >>> report = closed_loop("digits", Path(tempfile.mkdtemp()), task.example_input(300).numpy())
    >>> report.promoted, report.drill.regressed, report.drill.restored, report.drill.failed_requests
    (None, '2', '1', 0)
    >>> report.drill.rollback_why.startswith("alert PruneopsLatencyRegression")
    True
    >>> Registry().aliases("digits")["champion"]
    '1'
    >>> del os.environ["MLFLOW_TRACKING_URI"]
    """
    registry = Registry()
    challenger = registry.aliases(model).get("challenger")
    with LocalStack(model, workdir, env=env or dict(os.environ), canary=0.5 if challenger else 0.0) as stack:
        traffic = Traffic(stack.url("sidecar"), model, inputs).start()
        try:
            started = time.monotonic()
            promoted_after = None
            if challenger:
                deadline = started + timeout
                while registry.aliases(model).get("champion") != challenger and time.monotonic() < deadline:
                    time.sleep(1.0)
                if registry.aliases(model).get("champion") != challenger:
                    raise TimeoutError(f"analysis did not promote v{challenger} within {timeout:g}s")
                promoted_after = time.monotonic() - started
                traffic.wait_for(challenger, time.monotonic(), 30)
            # The regression alert compares with the previous version's recent p99: wait until
            # the champion has one (at once for a challenger that served canary traffic).
            wait_for_p99(PromQuery(stack.url("prometheus")), model, registry.aliases(model)["champion"], timeout)
            result = run_drill(registry, model, traffic, timeout)
            if while_up is not None:
                while_up(stack)
        finally:
            traffic.stop()
    return LoopReport(challenger if promoted_after is not None else None, promoted_after, result)
