"""Start a pipeline run when a new model version lands in the registry.

Two ways in, one launcher:

- **Webhook** (``POST /webhooks/mlflow``): MLflow's ``model_version.created`` deliveries,
  signed ``X-MLflow-Signature: v1,<base64 HMAC-SHA256(secret, "<delivery id>.<timestamp>.<body>")>``.
  A missing or wrong signature, or a timestamp more than ``max_skew_s`` away, gets 401; a
  delivery id seen before gets 409 (replay). Both start nothing. A body over 1 MiB gets 413
  before its signature is even computed, and is never held whole.
- **Polling** (:func:`poll_once`), for stores without webhooks: new versions of the
  configured models since the last look.

Either way, versions the pipeline made (``pruneops.source=pipeline``) are ignored, so a run
never triggers itself; each (model, version) starts at most one run; runs go through one
worker thread, one at a time. What was started, how each run ended and which deliveries were
seen persist in ``$PRUNEOPS_HOME/trigger-state.json``.

Each run's outcome is also written where a user looks, on the source version's tags:
``pruneops.trigger_status`` (``running``, ``succeeded``, ``failed``), ``pruneops.trigger_at``
and ``pruneops.trigger_result`` (the version it registered) or ``pruneops.trigger_error``.
``pruneops retry MODEL VERSION --config trigger.yaml`` runs a failed one again.

``trigger.yaml`` maps each model to a recipe file, or to ``{recipe: FILE, task: PATH}`` when
that model is scored by its own task; a top-level ``task`` is the default for the others
(else each version's ``pruneops.task`` tag).

Signatures are checked by :mod:`pruneops.webhooks`, shared with the model server.
"""

__all__ = [
    "SECRET_ENV",
    "Launcher",
    "TriggerConfig",
    "TriggerState",
    "create_app",
    "decide",
    "poll_once",
    "run_and_record",
    "sign",
]

import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pruneops import settings
from pruneops.errors import PruneopsError
from pruneops.filelock import file_lock
from pruneops.recipe import Recipe, load_recipe
from pruneops.webhooks import DELIVERY, SECRET_ENV, check, sign

log = logging.getLogger("pruneops.trigger")
RunFn = Callable[[str, str, Recipe, str | None], Any]


@dataclass
class TriggerConfig:
    """Which models trigger runs, with which recipe, scored by which task.

    ``tasks`` holds the models that name their own task; the others use ``task``, else each
    version's ``pruneops.task`` tag.
    """

    models: dict[str, Recipe]
    task: str | None = None
    secret: str = ""
    max_skew_s: int = 300
    tasks: dict[str, str] = field(default_factory=dict)

    def task_for(self, model: str) -> str | None:
        """The task a run of ``model`` is scored by (None: the version's own tag).

        >>> from pruneops.recipe import parse_recipe
        >>> recipe = parse_recipe({"prune": {"method": "wanda", "pattern": "2:4"}})
        >>> config = TriggerConfig({"a": recipe, "b": recipe}, task="t:a", tasks={"b": "t:b"})
        >>> config.task_for("a"), config.task_for("b")
        ('t:a', 't:b')
        """
        return self.tasks.get(model, self.task)

    @classmethod
    def load(cls, path: str | Path) -> "TriggerConfig":
        """Read ``{task: ..., models: {NAME: recipe.yaml | {recipe: recipe.yaml, task: ...}}}``.

        Recipe files are relative to the config file; the secret comes from ``$PRUNEOPS_WEBHOOK_SECRET``.
        """
        import yaml

        path = Path(path)
        if not path.is_file():
            raise PruneopsError(f"trigger config not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        models = data.get("models")
        if not isinstance(models, dict) or not models:
            raise PruneopsError(f"{path}: 'models' must map each model name to a recipe file")
        recipes, tasks = {}, {}
        for name, entry in models.items():
            if isinstance(entry, dict):
                unknown = set(entry) - {"recipe", "task"}
                if "recipe" not in entry or unknown:
                    raise PruneopsError(
                        f"{path}: model {name!r} must be a recipe file or {{recipe: FILE, task: PATH}}"
                        + (f" (unknown keys: {', '.join(sorted(unknown))})" if unknown else "")
                    )
                if entry.get("task"):
                    tasks[name] = str(entry["task"])
                entry = entry["recipe"]
            recipes[name] = load_recipe(str((path.parent / str(entry)).resolve()))
        return cls(
            models=recipes,
            task=data.get("task", cls.task),
            secret=os.environ.get(SECRET_ENV, ""),
            max_skew_s=int(data.get("max_skew_s", 300)),
            tasks=tasks,
        )


@dataclass
class TriggerState:
    """What was started, how each run ended, and which deliveries were seen, persisted as JSON.

    A save merges with what is on disk under a file lock (lists joined, the newest outcome of
    each run kept), so ``pruneops retry`` and a running trigger can share the file.
    """

    path: Path
    started: list[str] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    runs: dict[str, dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, path: Path | None = None) -> "TriggerState":
        path = path or settings.state_dir() / "trigger-state.json"
        state = cls(path)
        if path.is_file():
            data = json.loads(path.read_text())
            state.started, state.deliveries, state.known = data["started"], data["deliveries"], data.get("known", [])
            state.runs = data.get("runs", {})
        return state

    def claim_delivery(self, delivery_id: str) -> bool:
        """False if this delivery was seen before (a replay)."""
        with self.lock:
            if delivery_id in self.deliveries:
                return False
            self.deliveries = [*self.deliveries[-999:], delivery_id]
            self._save()
            return True

    def claim_version(self, model: str, version: str) -> bool:
        """False if a run was already started for this version."""
        key = f"{model}:{version}"
        with self.lock:
            if key in self.started:
                return False
            self.started.append(key)
            self._save()
            return True

    def record_run(self, model: str, version: str, outcome: dict[str, str]) -> None:
        """Remember how the run of ``model`` v``version`` stands (``status``, ``at``, ``result``/``error``)."""
        with self.lock:
            key = f"{model}:{version}"
            self.runs[key] = outcome
            if key not in self.started:
                self.started.append(key)
            self._save()

    def save(self) -> None:
        with self.lock:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.path.with_suffix(".lock")):
            if self.path.is_file():
                self._merge(json.loads(self.path.read_text()))
            data = {"started": self.started, "deliveries": self.deliveries, "known": self.known, "runs": self.runs}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(self.path)

    def _merge(self, disk: dict[str, Any]) -> None:
        """Join another writer's state into this one: lists by union, runs by newest ``at``."""
        self.started += [k for k in disk.get("started", []) if k not in self.started]
        self.known += [k for k in disk.get("known", []) if k not in self.known]
        self.deliveries = [*[d for d in disk.get("deliveries", []) if d not in self.deliveries], *self.deliveries][
            -1000:
        ]
        for key, outcome in disk.get("runs", {}).items():
            if key not in self.runs or outcome.get("at", "") > self.runs[key].get("at", ""):
                self.runs[key] = outcome


def run_and_record(
    config: TriggerConfig, state: TriggerState, registry: Any, run: RunFn, model: str, version: str
) -> Any:
    """Run the pipeline for one source version and record how it went: in ``state`` and on
    the version's ``pruneops.trigger_*`` tags. Returns the run's result; re-raises its error.

    >>> import tempfile
    >>> from pruneops.recipe import parse_recipe
    >>> config = TriggerConfig({"digits": parse_recipe({"prune": {"sparsity": 0.5}})})
    >>> state = TriggerState(Path(tempfile.mkdtemp()) / "trigger-state.json")
    >>> run_and_record(config, state, None, lambda model, version, recipe, task: "2", "digits", "1")
    '2'
    >>> def failing(model, version, recipe, task):
    ...     raise PruneopsError("validate: no runtime")
    >>> run_and_record(config, state, None, failing, "digits", "3")
    Traceback (most recent call last):
    ...
    pruneops.errors.PruneopsError: validate: no runtime
    >>> {key: (run["status"], run.get("result") or run.get("error")) for key, run in state.runs.items()}
    {'digits:1': ('succeeded', '2'), 'digits:3': ('failed', 'validate: no runtime')}
    """
    _record(state, registry, model, version, {"status": "running"})
    try:
        result = run(model, version, config.models[model], config.task_for(model))
    except Exception as err:
        _record(state, registry, model, version, {"status": "failed", "error": str(err)[:4000]})
        raise
    _record(state, registry, model, version, {"status": "succeeded", "result": str(result)})
    return result


def _record(state: TriggerState, registry: Any, model: str, version: str, outcome: dict[str, str]) -> None:
    outcome = {**outcome, "at": datetime.now(tz=UTC).isoformat(timespec="seconds")}
    state.record_run(model, version, outcome)
    if registry is None:
        return
    tags = {"trigger_status": outcome["status"], "trigger_at": outcome["at"],
            "trigger_result": outcome.get("result"), "trigger_error": outcome.get("error")}  # fmt: skip
    try:
        registry.set_tags(model, version, {k: v for k, v in tags.items() if v is not None})
        if "error" not in outcome:
            registry.delete_tags(model, version, ["trigger_error"])
    except PruneopsError as err:  # the run's own outcome matters more than its bookkeeping
        log.warning("could not tag %s v%s with its trigger outcome: %s", model, version, err)


class Launcher:
    """Runs pipelines one at a time on a worker thread; remembers outcomes for /healthz.

    With ``state`` (and ``registry``), each outcome is recorded by :func:`run_and_record`.
    """

    def __init__(
        self, config: TriggerConfig, run: RunFn, state: TriggerState | None = None, registry: Any = None
    ) -> None:
        self.config, self.run, self.state, self.registry = config, run, state, registry
        self.jobs: queue.Queue[tuple[str, str]] = queue.Queue()
        self.outcomes: list[dict[str, str]] = []
        self._worker = threading.Thread(target=self._work, name="pipeline-runs", daemon=True)
        self._worker.start()

    def submit(self, model: str, version: str) -> None:
        self.jobs.put((model, version))

    def _work(self) -> None:
        while True:
            model, version = self.jobs.get()
            log.info("starting pipeline for %s v%s", model, version)
            try:
                if self.state is not None:
                    result = run_and_record(self.config, self.state, self.registry, self.run, model, version)
                else:
                    result = self.run(model, version, self.config.models[model], self.config.task_for(model))
                self.outcomes.append({"model": model, "version": version, "status": "succeeded", "result": str(result)})
                log.info("pipeline for %s v%s finished: %s", model, version, result)
            except Exception as err:  # noqa: BLE001 - a failed run is logged and counted; the trigger keeps serving
                self.outcomes.append({"model": model, "version": version, "status": "failed", "error": str(err)})
                log.error("pipeline for %s v%s failed: %s", model, version, err)
            finally:
                self.jobs.task_done()


def decide(config: TriggerConfig, state: TriggerState, model: str, version: str, tags: dict[str, str]) -> str | None:
    """Why a new version starts nothing (a sentence), or None when it should start a run.

    >>> import tempfile
    >>> from pruneops.recipe import parse_recipe
    >>> config = TriggerConfig({"digits": parse_recipe({"prune": {"sparsity": 0.5}})})
    >>> state = TriggerState(Path(tempfile.mkdtemp()) / "trigger-state.json")
    >>> decide(config, state, "digits", "2", {"pruneops.source": "pipeline"})
    'digits v2 was made by the pipeline'
    >>> decide(config, state, "other", "1", {}), decide(config, state, "digits", "1", {})
    ("no recipe configured for model 'other'", None)
    >>> decide(config, state, "digits", "1", {})  # one run per version
    'a run was already started for digits v1'
    """
    if tags.get("pruneops.source") == "pipeline":
        return f"{model} v{version} was made by the pipeline"
    if model not in config.models:
        return f"no recipe configured for model {model!r}"
    if not state.claim_version(model, version):
        return f"a run was already started for {model} v{version}"
    return None


def create_app(config: TriggerConfig, launcher: Launcher, state: TriggerState) -> Any:
    """The webhook receiver (FastAPI), its bodies capped at 1 MiB before any signature is checked.

    >>> import tempfile, time
    >>> from fastapi.testclient import TestClient
    >>> from pruneops.recipe import parse_recipe
    >>> from pruneops.webhooks import SIGNATURE, TIMESTAMP
    >>> config = TriggerConfig({"digits": parse_recipe({"prune": {"sparsity": 0.5}})}, secret="s3cret")
    >>> state = TriggerState(Path(tempfile.mkdtemp()) / "trigger-state.json")
    >>> runs = []
    >>> launcher = Launcher(config, lambda model, version, recipe, task: runs.append((model, version)), state)
    >>> client = TestClient(create_app(config, launcher, state))
    >>> body = b'{"entity": "model_version", "action": "created", "data": {"name": "digits", "version": "1"}}'
    >>> client.post("/webhooks/mlflow", content=body).status_code  # unsigned
    401
    >>> now = str(int(time.time()))
    >>> headers = {SIGNATURE: sign("s3cret", "d1", now, body), TIMESTAMP: now, DELIVERY: "d1"}
    >>> client.post("/webhooks/mlflow", content=body, headers=headers).json()
    {'status': 'started', 'model': 'digits', 'version': '1'}
    >>> client.post("/webhooks/mlflow", content=body, headers=headers).status_code  # a replay
    409
    >>> launcher.jobs.join(); runs
    [('digits', '1')]
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from pruneops.asgi import WEBHOOK_BODY_BYTES, BodyLimit

    if not config.secret:
        raise PruneopsError(f"set {SECRET_ENV}: the webhook receiver refuses to run without a secret")
    app = FastAPI(title="pruneops trigger")

    def error(status: int, message: str) -> JSONResponse:
        log.warning("webhook refused (%s): %s", status, message)
        return JSONResponse({"error": message}, status_code=status)

    @app.post("/webhooks/mlflow")
    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        refused = check(request.headers, body, config.secret, config.max_skew_s)
        if refused:
            return error(401, refused)
        delivery = request.headers[DELIVERY]
        if not state.claim_delivery(delivery):
            return error(409, f"delivery {delivery} was already received")
        try:
            payload = json.loads(body)
            entity, action, data = payload["entity"], payload["action"], payload["data"]
        except (ValueError, KeyError, TypeError):
            return error(400, "body is not an MLflow webhook payload (entity, action, data)")
        if (entity, action) != ("model_version", "created"):
            return JSONResponse({"status": "ignored", "reason": f"event {entity}.{action}"}, status_code=202)
        model, version = str(data.get("name", "")), str(data.get("version", ""))
        reason = decide(config, state, model, version, data.get("tags") or {})
        if reason:
            log.info("ignored: %s", reason)
            return JSONResponse({"status": "ignored", "reason": reason}, status_code=202)
        launcher.submit(model, version)
        return JSONResponse({"status": "started", "model": model, "version": version}, status_code=202)

    @app.get("/healthz")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queued": launcher.jobs.qsize(), "runs": launcher.outcomes, "started": state.started}

    return BodyLimit(app, limit=WEBHOOK_BODY_BYTES)


def poll_once(config: TriggerConfig, state: TriggerState, launcher: Launcher, registry: Any) -> list[str]:
    """Start runs for versions that appeared since the last poll; returns what was started.

    The first poll only records the versions that already exist (``known``), so starting the
    poller does not replay the registry's history.

    >>> import tempfile
    >>> from pruneops.modelio import build_model
    >>> from pruneops.onboard import register_source
    >>> from pruneops.recipe import parse_recipe
    >>> from pruneops.registry import Registry
    >>> from pruneops.tasks.digits import task
    >>> registry = Registry("sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    >>> def new_version():
    ...     model = build_model(task.arch)
    ...     return register_source(registry, "digits", model, task.arch, task, "pruneops.tasks.digits:task")
    >>> _ = new_version()
    >>> config = TriggerConfig({"digits": parse_recipe({"prune": {"sparsity": 0.5}})})
    >>> state = TriggerState(Path(tempfile.mkdtemp()) / "trigger-state.json")
    >>> launcher = Launcher(config, lambda model, version, recipe, task: version, state)
    >>> poll_once(config, state, launcher, registry)  # the first poll only learns what exists
    []
    >>> _ = new_version()
    >>> poll_once(config, state, launcher, registry)
    ['digits:2']
    >>> launcher.jobs.join(); launcher.outcomes
    [{'model': 'digits', 'version': '2', 'status': 'succeeded', 'result': '2'}]
    """
    started = []
    first = not state.known
    for model in config.models:
        try:
            versions = registry.versions(model)
        except PruneopsError as err:
            log.warning("poll: %s", err)
            continue
        for info in versions:
            key = f"{model}:{info.version}"
            if key in state.known:
                continue
            state.known.append(key)
            if first:
                continue
            if decide(config, state, model, info.version, info.tags) is None:
                launcher.submit(model, info.version)
                started.append(key)
    state.save()
    return started


def default_runner(kfp_host: str | None = None, namespace: str | None = None, token_file: str | None = None) -> RunFn:
    """Run locally with kfp.local, or submit to ``kfp_host`` (in ``namespace``, with the token in ``token_file``).

    >>> from pruneops.recipe import parse_recipe
    >>> run = default_runner(kfp_host="http://kfp:8888")  # submits; without a host, runs with kfp.local
    >>> run("digits", "1", parse_recipe({"prune": {"sparsity": 0.5}}), None)  # the default SQLite store
    Traceback (most recent call last):
    ...
    pruneops.errors.PruneopsError: --kfp-host needs a tracking server the cluster can reach; ...
    """

    def run(model: str, version: str, recipe: Recipe, task: str | None) -> str:
        from pruneops.pipelines.runner import run_local, submit

        if kfp_host:
            uri = settings.tracking_uri()
            return submit(kfp_host, model, version, recipe, task, uri, namespace=namespace, token_file=token_file)
        return run_local(model, version, recipe, task).version

    return run
