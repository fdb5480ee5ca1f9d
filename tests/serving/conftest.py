"""A real registry with several digits versions, the model server and the sidecar as processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_process, wait_http
from tests.serving.registered import plant

SECRET = "serving-secret"


@dataclass
class Stack:
    home: Path
    server: str
    sidecar: str
    env: dict[str, str]
    versions: dict[str, str]
    server_pid: int = 0
    sidecar_pid: int = 0


def start_cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pruneops.cli", *args], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip


def _register_versions(env: dict[str, str]) -> dict[str, str]:
    """Good versions (baseline champion, a 50%-channels model) and attacks (tests/serving/registered.py)."""
    out = subprocess.run([sys.executable, "-m", "tests.serving.registered"], env=env, capture_output=True, text=True,
                         timeout=600, cwd=Path(__file__).parents[2])  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    versions: dict[str, str] = json.loads(out.stdout.splitlines()[-1])
    return versions


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="pruneops-serving-"))
    # A module planted on the processes' path: if anything imports it, the marker file appears.
    plant(home / "site", home / "pwned")
    path = os.pathsep.join([str(home / "site"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PRUNEOPS_HOME": str(home), "PRUNEOPS_WEBHOOK_SECRET": SECRET,
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": path}  # fmt: skip
    env.pop("MLFLOW_TRACKING_URI", None)
    versions = _register_versions(env)
    server_port, sidecar_port = free_port(), free_port()
    server = start_cli(["serve", "--model", "digits", "--port", str(server_port), "--poll-interval", "0.5", "--shadow"],
                    env, home / "server.log")  # fmt: skip
    sidecar = start_cli(["sidecar", "--upstream", f"http://127.0.0.1:{server_port}", "--port", str(sidecar_port),
                      "--sample-every", "1"], env, home / "sidecar.log")  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{server_port}/v2/health/ready", timeout=120, process=server)
        wait_http(f"http://127.0.0.1:{sidecar_port}/metrics", timeout=60, process=sidecar)
        yield Stack(home, f"http://127.0.0.1:{server_port}", f"http://127.0.0.1:{sidecar_port}", env, versions,
                    server.pid, sidecar.pid)  # fmt: skip
    finally:
        for process in (sidecar, server):
            stop_process(process, timeout=20)
        shutil.rmtree(home, ignore_errors=True)
