"""The sidecar's added latency with drift computed in the sidecar (before) or in the drift service (after).

Issue 17 moved drift out of the sidecar: with ``--drift-service`` the sidecar only ships its
sampled rows, and one ``pruneops drift-service`` computes drift over every replica's samples.
This runs, as processes on loopback, the model server (``direct``) and two sidecars in front of
it, measured in one run with rounds in rotating order (``benchmarks/serving_overhead.py``'s load
generator, fixed rate and closed loop):

- ``local``: ``pruneops sidecar --drift-interval 30`` (its drift worker and Evidently child);
- ``shipped``: ``pruneops sidecar --drift-service URL``, with the drift service running beside.

Both sample every 10th inference and compute drift every 30 s or 1,000 sampled rows. Reported:
each sidecar's added p50/p99 over the direct path (median of per-round differences), and CPU
per request of each sidecar process with its children (the local one's Evidently child
included) and of the drift service. On this one machine the service shares the two cores with
everything else; on a cluster it runs in its own pod. Writes
``benchmarks/results/drift_placement.json``.

Run: ``.venv/bin/python benchmarks/drift_placement.py`` (about 5 minutes).
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
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's benchmarks
from benchmarks.serving_overhead import RESULTS, cpu_seconds, result_load, round_of, stats
from pruneops.monitoring.localstack import free_port, wait_http

PATHS = ("direct", "local", "shipped")


def cpu_tree(pid: int) -> float:
    """CPU seconds of a process and its living children (Linux /proc)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_tree(int(child))
    return total


def _median_added(direct: list[float], proxied: list[float]) -> float:
    """The median over rounds of what the proxy added to that round's direct percentile."""
    return float(np.median([p - d for d, p in zip(direct, proxied, strict=True)]))


def compare(
    ports: dict[str, int], args: argparse.Namespace, rate: float | None, pids: dict[str, int]
) -> dict[str, Any]:
    samples: dict[str, list[float]] = {name: [] for name in PATHS}
    p50: dict[str, list[float]] = {name: [] for name in PATHS}
    p99: dict[str, list[float]] = {name: [] for name in PATHS}
    cpu = dict.fromkeys(pids, 0.0)
    for index in range(args.rounds):
        turn = index % len(PATHS)
        for name in PATHS[turn:] + PATHS[:turn]:
            before = {key: cpu_tree(pid) for key, pid in pids.items()}
            latencies, failed = asyncio.run(round_of(ports[name], args.clients, args.seconds, rate))
            for key, pid in pids.items():
                if key == name or (key == "service" and name == "shipped"):
                    cpu[key] += cpu_tree(pid) - before[key]
            print(f"{name} {result_load(rate)}: {len(latencies)} requests, {failed} errors", file=sys.stderr)
            samples[name] += latencies
            p50[name].append(float(np.percentile(latencies, 50)) * 1000)
            p99[name].append(float(np.percentile(latencies, 99)) * 1000)
    result: dict[str, Any] = {"load": result_load(rate)}
    for name in PATHS:
        result[name] = stats(samples[name], args.rounds * args.seconds)
    for name in ("local", "shipped"):
        result[f"{name}_added"] = {
            f"{key}_ms_median_of_rounds": _median_added(rounds["direct"], rounds[name])
            for key, rounds in (("p50", p50), ("p99", p99))
        }
    served = {"local": len(samples["local"]), "shipped": len(samples["shipped"]), "service": len(samples["shipped"])}
    result["cpu_ms_per_request"] = {key: used * 1000 / max(1, served[key]) for key, used in cpu.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rates", type=float, nargs="*", default=[100.0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="pruneops-drift-bench-")
    env = {**os.environ, "PRUNEOPS_HOME": home, "MLFLOW_DISABLE_TELEMETRY": "true", "PRUNEOPS_DRIFT_TOKEN": "bench"}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run([sys.executable, "-m", "pruneops.cli", "init-demo"], env=env, check=True, capture_output=True)
    ports = {name: free_port() for name in (*PATHS, "service")}
    cli = [sys.executable, "-m", "pruneops.cli"]

    def start(command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    upstream = f"http://127.0.0.1:{ports['direct']}"
    sidecar = [
        *cli,
        "sidecar",
        "--upstream",
        upstream,
        "--max-in-flight",
        str(args.clients * 2),
        "--sample-every",
        "10",
    ]
    processes = {
        "direct": start([*cli, "serve", "--model", "digits", "--port", str(ports["direct"])]),
        "service": start([*cli, "drift-service", "--port", str(ports["service"]), "--interval", "30"]),
        "local": start([*sidecar, "--port", str(ports["local"]), "--drift-interval", "30", "--drift-rows", "1000"]),
        "shipped": start(
            [*sidecar, "--port", str(ports["shipped"]), "--drift-service", f"http://127.0.0.1:{ports['service']}"]
        ),
    }
    try:
        wait_http(f"{upstream}/v2/health/ready", processes["direct"], timeout=120)
        wait_http(f"http://127.0.0.1:{ports['service']}/healthz", processes["service"], timeout=120)
        for name in ("local", "shipped"):
            wait_http(f"http://127.0.0.1:{ports[name]}/metrics", processes[name], timeout=120)
        for name in PATHS:
            asyncio.run(round_of(ports[name], args.clients, 2.0, None))
        pids = {name: processes[name].pid for name in ("local", "shipped", "service")}
        result: dict[str, Any] = {
            "benchmark": "drift_placement",
            "clients": args.clients,
            "rounds_per_path": args.rounds,
            "seconds_per_round": args.seconds,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "fixed_rate": [compare(ports, args, rate, pids) for rate in args.rates],
            "closed_loop": compare(ports, args, None, pids),
        }
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['service']}/healthz", timeout=10) as reply:
            result["service_rows_received"] = json.loads(reply.read())["models"]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "drift_placement.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(timeout=20)


if __name__ == "__main__":
    main()
