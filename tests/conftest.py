"""Shared fixtures: an isolated state folder per test, a real mlflow server, tiny saved models."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Re-exported for the tests: one port finder and one readiness wait, shared with the local stack.
from pruneops.monitoring.localstack import free_port, wait_http

__all__ = ["free_port", "stop_process", "wait_http"]


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own PRUNEOPS_HOME and no inherited tracking URI."""
    home = tmp_path / "pruneops-home"
    monkeypatch.setenv("PRUNEOPS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture(scope="session")
def mlflow_server_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the session's ``mlflow server``: its database and ``artifacts/``."""
    return tmp_path_factory.mktemp("mlflow-server")


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_root: Path) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite backend, proxied artifacts) on loopback for the session."""
    with running_mlflow_server(mlflow_server_root) as url:
        yield url


@contextlib.contextmanager
def running_mlflow_server(root: Path, workers: int = 1, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start ``mlflow server`` keeping its database and artifacts in ``root``; yield its URL."""
    port = free_port()
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [
            mlflow_bin, "server",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        ],
        stdout=log, stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            # Webhooks to the trigger on loopback (ENVIRONMENT.md): http and private addresses allowed.
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            **(env or {}),
        },
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", timeout=90, process=process)
        yield url
    finally:
        stop_process(process)
        log.close()


@pytest.fixture
def plain_mlflow() -> Iterator[Callable[[str], None]]:
    """MLflow's own client pointed at a store, as a user's code would, and put back after the test.

    ``mlflow.set_tracking_uri`` is global and also exports ``MLFLOW_TRACKING_URI`` to the
    process environment, so without this a later test would talk to this test's store.
    """
    import mlflow

    yield mlflow.set_tracking_uri
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None resets it and unsets the variable


def stop_process(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def digits_baseline():  # type: ignore[no-untyped-def]
    """The digits baseline, trained once per session (seed 0)."""
    from pruneops.tasks.digits import task

    return task.train_baseline(seed=0)
