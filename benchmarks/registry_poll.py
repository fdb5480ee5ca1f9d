"""What one poll costs against a real ``mlflow server``: HTTP requests, bytes read, time.

A model with ``--operations`` alias operations behind it (set challenger, promote, rollback,
repeated), then, alternating ``--polls`` times each:

- the model server's poll: the champion's version number (``Registry.alias_version`` where the
  code has it, else ``Registry.aliases`` as servers did before);
- the rollout controller's poll: ``Registry.sync`` where the code has it, else
  ``Registry.reconcile`` then ``Registry.aliases`` as the controller did before.

HTTP requests and response bytes are counted at ``requests.Session.request`` (MLflow's REST
client goes through it), so the same script measures any version of the registry client: run it
with ``PYTHONPATH`` set to a checkout of an older commit for the "before" figures. Writes
``benchmarks/results/registry_poll_<label>.json``.

Run: ``.venv/bin/python benchmarks/registry_poll.py --label after``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import torch

RESULTS = Path(__file__).parent / "results"


class HttpCounter:
    """Counts requests and response bytes made through ``requests.Session.request``."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        real = requests.Session.request

        def counted(session: requests.Session, *args: Any, **kwargs: Any) -> requests.Response:
            reply = real(session, *args, **kwargs)
            self.requests += 1
            self.bytes += len(reply.content)
            return reply

        requests.Session.request = counted

    def measure(self, poll: Callable[[], object]) -> tuple[int, int, float]:
        """(requests, bytes, milliseconds) of one call of ``poll``."""
        before = (self.requests, self.bytes)
        started = time.perf_counter()
        poll()
        elapsed = (time.perf_counter() - started) * 1000
        return self.requests - before[0], self.bytes - before[1], elapsed


def _server(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{home}/mlflow.db",
         "--default-artifact-root", str(home / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return process
        except requests.ConnectionError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("mlflow server did not start")


def _versions(registry: Any, name: str, folder: Path) -> list[str]:
    from pruneops.modelio import ArchSpec, save_model
    from pruneops.probe import CLASSES, record

    numbers = []
    for seed in range(2):
        torch.manual_seed(seed)
        model = torch.nn.Linear(4, 3)
        spec = ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 3})
        saved = save_model(model, folder / str(seed), spec, probe=record(model, torch.randn(8, 4), CLASSES))
        numbers.append(registry.register(name, saved, tags={"gate": "passed"}).version)
    return numbers


def _commit(folder: Path) -> str:
    """The commit of the checkout the registry client was imported from."""
    found = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip()


def _summary(samples: list[tuple[int, int, float]]) -> dict[str, float]:
    return {
        "requests": statistics.median(s[0] for s in samples),
        "bytes": statistics.median(s[1] for s in samples),
        "median_ms": round(statistics.median(s[2] for s in samples), 2),
        "max_ms": round(max(s[2] for s in samples), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="Names the result file: before, after, ...")
    parser.add_argument("--operations", type=int, default=150)
    parser.add_argument("--polls", type=int, default=30)
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import pruneops.registry as registry_module
    from pruneops.registry import CHALLENGER, CHAMPION, Registry

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        server = _server(home, args.port)
        try:
            registry = Registry(f"http://127.0.0.1:{args.port}")
            v1, v2 = _versions(registry, "polled", home / "models")
            registry.set_alias("polled", CHAMPION, v1, "start")
            done = 1
            while done < args.operations:
                registry.set_alias("polled", CHALLENGER, v2, "bench")
                registry.promote("polled", why="bench")
                registry.rollback("polled", why="bench")
                done += 3
            counter = HttpCounter()
            if hasattr(registry, "alias_version"):
                server_poll: Callable[[], object] = lambda: registry.alias_version("polled", CHAMPION)  # noqa: E731
            else:
                server_poll = lambda: registry.aliases("polled").get(CHAMPION)  # noqa: E731
            if hasattr(registry, "sync"):
                controller_poll: Callable[[], object] = lambda: registry.sync("polled")  # noqa: E731
            else:
                controller_poll = lambda: (registry.reconcile("polled"), registry.aliases("polled"))  # noqa: E731
            server_samples, controller_samples = [], []
            for _ in range(args.polls):  # interleaved, so drift in the machine's load hits both alike
                server_samples.append(counter.measure(server_poll))
                controller_samples.append(counter.measure(controller_poll))
            history = len(registry.history("polled"))
        finally:
            server.terminate()
            server.wait(timeout=30)
    result = {
        "label": args.label,
        "registry_module": registry_module.__file__,
        "commit": _commit(Path(str(registry_module.__file__)).parent),
        "alias_operations": done,
        "history_events": history,
        "server_poll": _summary(server_samples),
        "controller_poll": _summary(controller_samples),
        "polls": args.polls,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "backend": "mlflow server (SQLite, 1 worker) on loopback",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"registry_poll_{args.label}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
