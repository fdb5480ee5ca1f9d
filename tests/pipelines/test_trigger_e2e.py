"""End to end: a real mlflow server (4 workers, as by default) delivers a signed webhook to a real
trigger process, which runs the pipeline; a pruned version with lineage appears, and the
pipeline's own version starts nothing (no loop)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pruneops.registry import Registry
from tests.conftest import free_port, running_mlflow_server, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RECIPE = Path(__file__).parents[2] / "recipes" / "channels-50-cpu.yaml"


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` as it runs by default, with several workers, and one webhook encryption key.

    Without a shared ``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY`` each worker makes its own, and a
    secret stored by one worker cannot be read by another (``InvalidToken``).
    """
    from cryptography.fernet import Fernet

    root = tmp_path / "mlflow"
    root.mkdir()
    key = Fernet.generate_key().decode()
    with running_mlflow_server(root, workers=4, env={"MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": key}) as url:
        yield url


def test_webhook_runs_pipeline(mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = f"digits-e2e-{int(time.time())}"
    (tmp_path / "trigger.yaml").write_text(f"task: pruneops.tasks.digits:task\nmodels:\n  {model}: {RECIPE}\n")
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "PRUNEOPS_WEBHOOK_SECRET": "e2e-secret",
        "PRUNEOPS_HOME": str(tmp_path / "trigger-home"),
    }
    log = open(tmp_path / "trigger.log", "w")  # noqa: SIM115 - closed below
    trigger = subprocess.Popen(
        [sys.executable, "-m", "pruneops.cli", "trigger",
         "--config", str(tmp_path / "trigger.yaml"), "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60, process=trigger)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        registry = Registry()
        hook = registry.create_webhook(f"hook-{model}", "http://127.0.0.1:9/nowhere", ["model_version.created"],
                                       "old-secret")  # fmt: skip
        # Run again (a redeploy): the same webhook, updated, not a second one delivering every event twice.
        again = registry.create_webhook(f"hook-{model}", f"http://127.0.0.1:{port}/webhooks/mlflow",
                                        ["model_version.created"], "e2e-secret")  # fmt: skip
        from mlflow import MlflowClient

        assert again == hook
        # Every worker reads the stored secret: a list over fresh connections reaches several of them.
        for _ in range(16):
            with httpx.Client() as fresh:  # a new connection each time, so not always the same worker
                listed = fresh.get(f"{mlflow_server}/api/2.0/mlflow/webhooks", timeout=10)
            assert listed.status_code == 200, listed.text[:300]
        assert [w.url for w in MlflowClient(mlflow_server).list_webhooks() if w.name == f"hook-{model}"] == [
            f"http://127.0.0.1:{port}/webhooks/mlflow"
        ]
        from pruneops.demo import init_demo

        init_demo(model)  # registers v1: MLflow delivers model_version.created to the trigger
        deadline = time.monotonic() + 420
        made = []
        while time.monotonic() < deadline and not made:
            time.sleep(3)
            made = [v for v in registry.versions(model) if v.tag("source") == "pipeline"]
            assert trigger.poll() is None, (tmp_path / "trigger.log").read_text()[-3000:]
        assert made, (tmp_path / "trigger.log").read_text()[-3000:]
        version = made[0]
        assert version.tag("parent_version") == "1" and version.tag("gate") in ("passed", "failed")
        assert version.tag("recipe_sha256") and version.tag("method") == "magnitude"
        time.sleep(5)  # the pipeline's own version was delivered too: it must start nothing
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as reply:
            health = json.loads(reply.read())
        assert health["started"] == [f"{model}:1"], health
        assert len(registry.versions(model)) == 2
    finally:
        trigger.terminate()
        trigger.wait(timeout=30)
        log.close()
