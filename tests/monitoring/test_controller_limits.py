"""The controller process under a huge body: refused before it is parsed, memory bounded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, stop_process, wait_http
from tests.rss import RssWatch, stream

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


def test_a_400_mib_body_is_refused_and_never_held(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PRUNEOPS_HOME": str(tmp_path / "home"), "PRUNEOPS_CONTROLLER_TOKEN": "t0ken"}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "pruneops.cli", "controller", "--model", "digits", "--prometheus",
         "http://127.0.0.1:9", "--port", str(port), "--interval", "3600"],
        env=env, stdout=(tmp_path / "controller.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", timeout=60, process=process)
        for auth in ({}, {"authorization": "Bearer t0ken"}):  # anonymous, and with the token
            with RssWatch(process.pid) as watch:
                reply = httpx.post(url + "/alerts", content=stream(400 * MIB), headers=auth, timeout=300)
            assert reply.status_code == 413 and "over 1048576 bytes" in reply.json()["error"]
            assert watch.grew < 24, f"the controller grew by {watch.grew:.0f} MiB"
        assert httpx.post(url + "/alerts", json={"alerts": []}, timeout=10).status_code == 401
    finally:
        stop_process(process)
