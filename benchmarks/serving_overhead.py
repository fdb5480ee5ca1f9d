"""What the sidecar adds: the same load direct to the model server and through the sidecar.

Starts the model server (digits, ONNX Runtime) and the sidecar as processes on loopback,
then drives ``--clients`` concurrent clients (asyncio + httpx, V2 JSON, batch 1) in
alternating rounds: direct, sidecar, direct, ... so both see the same machine conditions.
Reports p50/p90/p99 for each path, the added latency (sidecar minus direct), errors, and the
server's requests per second. Goal from the issue: added p50 <= 1 ms and p99 <= 3 ms at 50
clients on 2 cores, zero errors. Writes ``benchmarks/results/serving_overhead.json``.

Run: ``.venv/bin/python benchmarks/serving_overhead.py``. On 2 cores the load generator, the
server and the sidecar share the CPUs, which the figures include.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

RESULTS = Path(__file__).parent / "results"
BODY = {"inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 64}]}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


async def round_of(url: str, clients: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    reply = await client.post(f"{url}/v2/models/digits/infer", json=BODY)
                    ok = reply.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += 0 if ok else 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors


def stats(samples: list[float], seconds: float) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {
        "requests": len(ms),
        "rps": len(ms) / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="pruneops-bench-")
    env = {**os.environ, "PRUNEOPS_HOME": home, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run([sys.executable, "-m", "pruneops.cli", "init-demo"], env=env, check=True, capture_output=True)
    server_port, sidecar_port = free_port(), free_port()
    cli = [sys.executable, "-m", "pruneops.cli"]
    server = subprocess.Popen([*cli, "serve", "--model", "digits", "--port", str(server_port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    sidecar = subprocess.Popen([*cli, "sidecar", "--upstream", f"http://127.0.0.1:{server_port}",
                                "--port", str(sidecar_port), "--max-in-flight", str(args.clients * 2)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        direct_url, sidecar_url = f"http://127.0.0.1:{server_port}", f"http://127.0.0.1:{sidecar_port}"
        wait(f"{direct_url}/v2/health/ready")
        wait(f"{sidecar_url}/metrics")
        asyncio.run(round_of(sidecar_url, args.clients, 2.0))  # warm up both paths
        samples: dict[str, list[float]] = {"direct": [], "sidecar": []}
        errors = {"direct": 0, "sidecar": 0}
        for index in range(args.rounds * 2):
            name = ("direct", "sidecar")[index % 2]
            latencies, failed = asyncio.run(round_of(direct_url if name == "direct" else sidecar_url,
                                                     args.clients, args.seconds))  # fmt: skip
            samples[name] += latencies
            errors[name] += failed
        seconds = args.rounds * args.seconds
        result: dict[str, Any] = {
            "benchmark": "serving_overhead",
            "clients": args.clients,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "model": "digits CNN (ONNX Runtime CPU), batch 1, V2 JSON",
            "direct": stats(samples["direct"], seconds) | {"errors": errors["direct"]},
            "sidecar": stats(samples["sidecar"], seconds) | {"errors": errors["sidecar"]},
        }
        result["added_p50_ms"] = result["sidecar"]["p50_ms"] - result["direct"]["p50_ms"]
        result["added_p99_ms"] = result["sidecar"]["p99_ms"] - result["direct"]["p99_ms"]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "serving_overhead.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    finally:
        for process in (sidecar, server):
            process.terminate()
            process.wait(timeout=20)


if __name__ == "__main__":
    main()
