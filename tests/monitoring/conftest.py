"""A real Prometheus on loopback, scraping an exporter the test controls, and a small registry."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from pruneops.monitoring.localstack import find_binary, prometheus_config
from tests.conftest import free_port, wait_http


@dataclass
class LivePrometheus:
    url: str
    exporter: CollectorRegistry  # what Prometheus scrapes every second


@pytest.fixture(scope="module")
def live_prometheus() -> Iterator[LivePrometheus]:
    binary = find_binary("prometheus")
    if binary is None:
        pytest.skip("prometheus not found: run `make tools`")
    exporter = CollectorRegistry()
    exporter_port, port = free_port(), free_port()
    server, _thread = start_http_server(exporter_port, addr="127.0.0.1", registry=exporter)
    work = Path(tempfile.mkdtemp(prefix="prometheus-"))
    rules = Path(__file__).parents[2] / "monitoring" / "prometheus" / "rules.yaml"
    (work / "prometheus.yml").write_text(
        prometheus_config({"exporter": f"127.0.0.1:{exporter_port}"}, str(rules), "127.0.0.1:9", 1)
    )
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=60, process=process)
        yield LivePrometheus(f"http://127.0.0.1:{port}", exporter)
    finally:
        process.terminate()
        process.wait(timeout=20)
        server.shutdown()
        log.close()
