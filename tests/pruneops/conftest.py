"""Registry fixtures shared by the registry and registration tests."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pruneops.registry import Registry


@pytest.fixture(params=["sqlite", "server"])
def backend(request: pytest.FixtureRequest, isolated_state: Path) -> str:
    """A tracking URI: a fresh SQLite store, or the session's real mlflow server."""
    if request.param == "server":
        uri: str = request.getfixturevalue("mlflow_server")
        request.node.add_marker(pytest.mark.integration)
        return uri
    return f"sqlite:///{isolated_state / 'mlflow.db'}"


@pytest.fixture
def registry(backend: str, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", backend)
    return Registry()


@pytest.fixture
def name() -> str:
    """A model name unique to the test, since the server outlives tests."""
    return f"m-{uuid.uuid4().hex[:8]}"
