"""Submitting to a multi-user Kubeflow: the namespace and a service-account token reach the
KFP API, with the pipeline's production settings in the submitted spec.

No Kubeflow runs here, so a stand-in answers the three KFP v2beta1 REST calls the SDK makes
(find the experiment, create it, create the run) and records them; the registry side is a
real ``mlflow server``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pruneops.demo import DEMO_RECIPE
from pruneops.errors import PruneopsError
from pruneops.pipelines.runner import submit
from pruneops.recipe import parse_recipe

pytestmark = pytest.mark.integration


class KfpApi(BaseHTTPRequestHandler):
    """Answers like the KFP API server, and keeps what it was sent."""

    seen: list[dict[str, Any]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append({"method": self.command, "path": self.path, "auth": self.headers.get("authorization"),
                          "body": body})  # fmt: skip
        if self.command == "POST" and self.path.startswith("/apis/v2beta1/experiments"):
            reply: dict[str, Any] = {"experiment_id": "e-1", "display_name": "pruneops"}
        elif self.command == "POST" and self.path.startswith("/apis/v2beta1/runs"):
            reply = {"run_id": "r-1", "experiment_id": "e-1"}
        else:
            reply = {"experiments": [], "total_size": 0}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def kfp_api() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    KfpApi.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), KfpApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", KfpApi.seen
    server.shutdown()


def test_submit_to_a_profile_namespace_with_a_token(
    kfp_api: tuple[str, list[dict[str, Any]]], mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pruneops.demo import init_demo

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = f"submit-{uuid.uuid4().hex[:8]}"
    version = init_demo(name).version
    token = tmp_path / "token"
    token.write_text("projected-sa-token")
    host, seen = kfp_api

    run_id = submit(host, name, version, parse_recipe(DEMO_RECIPE), None, mlflow_server, namespace="team-a",
                    token_file=str(token))  # fmt: skip

    assert run_id == "r-1"
    experiments, runs = "/apis/v2beta1/experiments", "/apis/v2beta1/runs"
    calls = [(s["method"], s["path"].split("?")[0]) for s in seen]
    assert calls == [("GET", experiments), ("POST", experiments), ("POST", runs)]
    assert all(s["auth"] == "Bearer projected-sa-token" for s in seen)
    assert "namespace=team-a" in seen[0]["path"] and seen[1]["body"]["namespace"] == "team-a"
    run = seen[2]["body"]
    assert run["experiment_id"] == "e-1"
    assert run["runtime_config"]["parameters"]["model_name"] == name
    assert run["runtime_config"]["parameters"]["task"] == "pruneops.tasks.digits:task"  # the version's own tag
    spec = run["pipeline_spec"]
    executors = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-register"]["secretAsEnv"][0]["secretName"] == "mlflow-credentials"
    assert spec["pipeline_spec"]["root"]["dag"]["tasks"]["register"]["cachingOptions"] == {}

    token.write_text("rotated-token")  # the kubelet rotates projected tokens: read on every request
    submit(host, name, version, parse_recipe(DEMO_RECIPE), None, mlflow_server, namespace="team-a",
           token_file=str(token))  # fmt: skip
    assert seen[-1]["auth"] == "Bearer rotated-token"


def test_a_missing_token_file_is_refused_before_anything_is_sent(
    kfp_api: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    host, seen = kfp_api
    with pytest.raises(PruneopsError, match="KFP token file not found"):
        submit(host, "digits", "1", parse_recipe(DEMO_RECIPE), None, "http://mlflow:5000",
               token_file=str(tmp_path / "absent"))  # fmt: skip
    assert seen == []
