"""The trigger process under a huge unsigned body: refused before its signature is computed, memory bounded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, stop_process, wait_http
from tests.rss import RssWatch, stream

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


def test_a_400_mib_unsigned_body_is_refused_and_never_held(tmp_path: Path) -> None:
    shutil.copy(Path(__file__).parents[2] / "recipes" / "channels-50-cpu.yaml", tmp_path / "recipe.yaml")
    (tmp_path / "trigger.yaml").write_text("models:\n  digits: recipe.yaml\n")
    port = free_port()
    env = {**os.environ, "PRUNEOPS_HOME": str(tmp_path / "home"), "PRUNEOPS_WEBHOOK_SECRET": "s3cret"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pruneops.cli", "trigger", "--config", str(tmp_path / "trigger.yaml"),
         "--port", str(port)],
        env=env, stdout=(tmp_path / "trigger.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", timeout=60, process=process)
        with RssWatch(process.pid) as watch:
            chunked = httpx.post(url + "/webhooks/mlflow", content=stream(400 * MIB), timeout=300)
            declared = httpx.post(url + "/webhooks/mlflow", content=stream(200 * MIB), timeout=300,
                                  headers={"content-length": str(200 * MIB)})  # fmt: skip
        for reply in (chunked, declared):
            assert reply.status_code == 413 and "over 1048576 bytes" in reply.json()["error"]
        assert watch.grew < 24, f"the trigger grew by {watch.grew:.0f} MiB"
        forged = httpx.post(url + "/webhooks/mlflow", content=b"{}", timeout=10)
        assert forged.status_code == 401  # small bodies still reach the signature check
    finally:
        stop_process(process)
