"""The serving and monitoring stack as local processes on loopback: the one-machine closed loop.

``LocalStack`` starts, each as a real process: the model server (``pruneops serve``), the
sidecar in front of it, the rollout controller, Prometheus (scraping the sidecar, the
server and the controller every ``scrape_interval``, with ``rules.yaml`` loaded) and
Alertmanager (routing every alert to the controller's ``/alerts`` with a bearer token).
The registry is whatever ``MLFLOW_TRACKING_URI``/``PRUNEOPS_HOME`` in ``env`` say.

>>> prometheus_config({"sidecar": "127.0.0.1:8081"}, "rules.yaml", "127.0.0.1:9093", 5).splitlines()[0]
'global:'
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from pruneops.errors import RuntimeUnavailable

RULES = Path(__file__).parent / "prometheus" / "rules.yaml"
PROMETHEUS, ALERTMANAGER = "prometheus", "prometheus-alertmanager"


LOCAL_TOOLS = Path(".tools") / "bin"  # where `make tools` (scripts/monitoring-tools) puts them


def find_binary(*names: str) -> str | None:
    """The first of ``names`` on PATH, then in ./.tools/bin (Debian calls Alertmanager
    ``prometheus-alertmanager``).

    >>> find_binary("no-such-binary-here") is None
    True
    """
    path = os.pathsep.join([os.environ.get("PATH", ""), str(LOCAL_TOOLS.resolve())])
    return next((found for name in names if (found := shutil.which(name, path=path))), None)


MISSING_BINARIES = (
    "the closed loop needs the prometheus and alertmanager binaries: run `make tools` "
    "(Debian's packages into ./.tools/bin, no root) or put them on PATH"
)


def _found_binaries() -> tuple[str | None, str | None]:
    return find_binary(PROMETHEUS), find_binary(ALERTMANAGER, "alertmanager")


def have_binaries() -> bool:
    """Whether Prometheus and Alertmanager are on PATH (tests skip the closed loop without them).

    >>> isinstance(have_binaries(), bool)
    True
    """
    return None not in _found_binaries()


def binaries() -> tuple[str, str]:
    """Paths of Prometheus and Alertmanager, or a clear error saying how to install them.

    >>> prometheus, alertmanager = binaries()  # the CI installs Debian's packages
    >>> Path(prometheus).is_file() and Path(alertmanager).is_file()
    True
    """
    prometheus, alertmanager = _found_binaries()
    if prometheus is None or alertmanager is None:
        raise RuntimeUnavailable(MISSING_BINARIES)
    return prometheus, alertmanager


def prometheus_config(targets: dict[str, str], rules: str, alertmanager: str, interval: float) -> str:
    """prometheus.yml: one job per target (job name -> host:port), the rules, one Alertmanager.

    >>> print(prometheus_config({"sidecar": "127.0.0.1:9100"}, "rules.yml", "127.0.0.1:9093", 5))
    global:
      scrape_interval: 5s
      evaluation_interval: 5s
    rule_files:
    - rules.yml
    alerting:
      alertmanagers:
      - static_configs:
        - targets:
          - 127.0.0.1:9093
    scrape_configs:
    - job_name: sidecar
      static_configs:
      - targets:
        - 127.0.0.1:9100
    <BLANKLINE>
    """
    config = {
        "global": {"scrape_interval": f"{interval:g}s", "evaluation_interval": f"{interval:g}s"},
        "rule_files": [rules],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [address]}]} for job, address in targets.items()
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def alertmanager_config(controller_url: str, token_file: str) -> str:
    """alertmanager.yml: every alert to the controller, quickly (group_wait 1s), with the bearer token.

    >>> config = yaml.safe_load(alertmanager_config("http://127.0.0.1:8090", "/run/token"))
    >>> config["receivers"][0]["webhook_configs"][0]["url"], config["route"]["group_wait"]
    ('http://127.0.0.1:8090/alerts', '1s')
    """
    config = {
        "route": {
            "receiver": "pruneops-controller",
            "group_by": ["alertname", "model", "version"],
            "group_wait": "1s",
            "group_interval": "5s",
            "repeat_interval": "1m",
        },
        "receivers": [
            {
                "name": "pruneops-controller",
                "webhook_configs": [
                    {
                        "url": f"{controller_url}/alerts",
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials_file": token_file}},
                    }
                ],
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def free_port() -> int:
    """A free TCP port on loopback.

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 60.0, log: Path | None = None
) -> None:
    """Wait for ``url`` to answer 200; fail (with the end of ``log``) if ``process`` exits or time runs out.

    >>> port = free_port()
    >>> server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
    ...                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    >>> wait_http(f"http://127.0.0.1:{port}/", server, timeout=30)  # returns once it answers 200
    >>> server.terminate(); _ = server.wait()
    >>> wait_http(f"http://127.0.0.1:{port}/", subprocess.Popen([sys.executable, "-c", "pass"]), timeout=30)
    Traceback (most recent call last):
    ...
    pruneops.errors.RuntimeUnavailable: the process behind http://127.0.0.1:.../ exited (0)...
    """

    def tail() -> str:
        return log.read_text()[-2000:] if log is not None and log.is_file() else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeUnavailable(f"the process behind {url} exited ({process.returncode}) {tail()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeUnavailable(f"{url} not ready after {timeout:g}s {tail()}")


@dataclass
class LocalStack:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    model: str
    workdir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    scrape_interval: float = 5.0
    poll_interval: float = 1.0
    analysis_interval: float = 5.0
    canary: float = 0.0
    drift_interval: float = 5.0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _ready: dict[str, str] = field(default_factory=dict, init=False)  # process name -> its readiness path

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self) -> LocalStack:
        prometheus, alertmanager = binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in ("server", "sidecar", "controller", "prometheus", "alertmanager", "alertmanager_cluster"):
            self.ports.setdefault(name, free_port())
        env = {**self.env, "PRUNEOPS_CONTROLLER_TOKEN": self.token, "MLFLOW_DISABLE_TELEMETRY": "true"}
        cli = [sys.executable, "-m", "pruneops.cli"]
        try:
            self._spawn("server", [*cli, "serve", "--model", self.model, "--port", str(self.ports["server"]),
                                   "--poll-interval", str(self.poll_interval), "--canary", str(self.canary)],
                        env, "/v2/health/ready")  # fmt: skip
            self._spawn("sidecar", [*cli, "sidecar", "--upstream", self.url("server"), "--port",
                                    str(self.ports["sidecar"]), "--sample-every", "1",
                                    "--drift-interval", str(self.drift_interval), "--drift-rows", "200",
                                    "--drift-min-rows", "100"],
                        env, "/metrics")  # fmt: skip
            self._spawn("controller", [*cli, "controller", "--model", self.model, "--port",
                                       str(self.ports["controller"]), "--prometheus", self.url("prometheus"),
                                       "--interval", str(self.analysis_interval)], env, "/healthz")  # fmt: skip
            token_file = self.workdir / "controller.token"
            token_file.write_text(self.token)
            token_file.chmod(0o600)
            (self.workdir / "alertmanager.yml").write_text(alertmanager_config(self.url("controller"), str(token_file)))
            self._spawn("alertmanager", [alertmanager, f"--config.file={self.workdir / 'alertmanager.yml'}",
                                         f"--storage.path={self.workdir / 'alertmanager-data'}",
                                         f"--web.listen-address=127.0.0.1:{self.ports['alertmanager']}",
                                         f"--cluster.listen-address=127.0.0.1:{self.ports['alertmanager_cluster']}"],
                        env, "/-/ready")  # fmt: skip
            targets = {job: f"127.0.0.1:{self.ports[job]}" for job in ("server", "sidecar", "controller")}
            config = prometheus_config(targets, str(RULES), f"127.0.0.1:{self.ports['alertmanager']}",
                                       self.scrape_interval)  # fmt: skip
            (self.workdir / "prometheus.yml").write_text(config)
            self._spawn("prometheus", [prometheus, f"--config.file={self.workdir / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                                       f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}"],
                        env, "/-/ready")  # fmt: skip
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, args: list[str], env: dict[str, str], ready_path: str) -> None:
        """Start ``name``; :meth:`start` waits for all of them to be ready once all are started."""
        log = self.workdir / f"{name}.log"
        self.processes[name] = subprocess.Popen(args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        self._ready[name] = ready_path

    def _wait_ready(self) -> None:
        # All five start at once and are waited for together: started one after another, the
        # three Python processes' imports alone took about 10 s of a 2-core machine's minute.
        for name, ready_path in self._ready.items():
            wait_http(self.url(name) + ready_path, self.processes[name], timeout=120, log=self.workdir / f"{name}.log")

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
