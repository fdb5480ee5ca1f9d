"""The model server and the sidecar against their peers: plain KServe, nginx, a bare Python proxy.

Starts, as processes on loopback, the model server (``pruneops serve``, digits on ONNX
Runtime) and four peers or proxies:

- ``kserve``: a plain ``kserve.Model`` + ONNX Runtime server on the same ONNX file
  (``benchmarks/kserve_peer.py``), what a team would write instead of ``pruneops serve``;
- ``sidecar``: ``pruneops sidecar`` in front of the model server, as the container images ship it:
  its hot path compiled by mypyc (a ``PRUNEOPS_COMPILE=1`` wheel, which the benchmark builds
  first with ``scripts/compiled_site.py``, about 25 s, or takes from ``--compiled-site DIR``);
- ``sidecar_python``: the same sidecar run as Python source (this checkout's editable install);
- ``nginx``: Debian's nginx as a plain reverse proxy in front of it (one worker, keep-alive
  upstream, no access log): the proxy a team would put there instead;
- ``bare``: ``benchmarks/bare_proxy.py``, the floor for any Python hop.

Then it drives ``--clients`` keep-alive connections (V2 JSON, batch 1) in rounds that visit
every path in rotating order, so all see the same machine conditions, and reads each
front process's CPU (user + system, the scheduler's run time from /proc) per request it answered.

``--compare-tree DIR`` adds a seventh path, ``before``: the same sidecar run from another
version's code, for a before/after comparison in one interleaved run. Build DIR from a
checkout of that version: ``git worktree add /tmp/old COMMIT`` then
``python -c "import sys; sys.path.insert(0, 'scripts'); import package_tree, pathlib;
package_tree.build(pathlib.Path('/tmp/old'), pathlib.Path('/tmp/old-tree'))"``. That run
is written to ``serving_overhead_before_after.json``.

Two kinds of load:

- **fixed rate** (open loop, as Istio's fortio benchmarks measure Envoy's overhead): the
  clients together send ``--rate`` requests/s on a fixed schedule, and latency counts from
  the scheduled start, so a stalled server cannot hide queueing (no coordinated omission).
  The issue's goal (added p50 <= 1 ms, p99 <= 3 ms at 50 clients on 2 cores) is read here.
- **closed loop**: every client sends its next request as soon as the last one answered,
  which gives the most requests/s the server (and the server behind the sidecar) sustains.

The load generator is a minimal HTTP/1.1 client on asyncio streams (pre-encoded request,
Content-Length framing): httpx spent more CPU than the server on 2 cores and made the
figures about itself. Writes ``benchmarks/results/serving_overhead.json``.

The sidecar's drift worker is off by default (``--drift-interval 0``): this measures the
proxy. Drift costs about 0.9 s of CPU per computation (``benchmarks/drift_window.py``),
which on 2 shared cores shows up in everyone's tail latency; ``--drift-interval 30``
measures with it.

Goals (issue 19): ``pruneops serve`` at >= 0.9x the peer's closed-loop requests/s
(``server_vs_kserve``), and the sidecar at <= 2x nginx's CPU per request with an added p50
no more than nginx's + 0.3 ms (``sidecar_vs_nginx``; ``sidecar_python_vs_nginx`` is the
uncompiled sidecar's ratio, ``sidecar_vs_sidecar_python`` what compiling saves).

Run: ``.venv/bin/python benchmarks/serving_overhead.py`` (needs ``nginx``: ``apt-get install
nginx-light``, and a C compiler for the compiled wheel; about 11 minutes). On 2 cores the load
generator, the servers and the proxies share the CPUs, which the figures include.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pruneops.monitoring.localstack import free_port, wait_http

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import compiled_site

RESULTS = Path(__file__).parent / "results"
BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 64}]}).encode()


def infer_request(port: int) -> bytes:
    """One V2 infer request, encoded once and sent as is."""
    head = (
        f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    """Send one request on a keep-alive connection and read its reply; True for a 200."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:"), 0)
    await reader.readexactly(length)
    return head[9:12] == b"200"


async def round_of(port: int, clients: int, seconds: float, rate: float | None) -> tuple[list[float], int]:
    """One round: ``rate`` requests/s on a fixed schedule, or closed loop when ``rate`` is None."""
    request = infer_request(port)
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]
    latencies: list[float] = []
    errors = 0
    begin = time.perf_counter() + 0.05

    async def worker(index: int) -> None:
        nonlocal errors
        reader, writer = connections[index]
        sent = 0
        while True:
            if rate is not None:  # request k of the schedule belongs to client k % clients
                slot = index + sent * clients
                if slot >= rate * seconds:
                    return
                start = begin + slot / rate
                await asyncio.sleep(max(0.0, start - time.perf_counter()))
            else:
                start = time.perf_counter()
                if start > begin + seconds:
                    return
            try:
                ok = await exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError):
                ok = False
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            latencies.append(time.perf_counter() - start)
            errors += 0 if ok else 1
            sent += 1

    await asyncio.gather(*(worker(index) for index in range(clients)))
    for _, writer in connections:
        writer.close()
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


def result_load(rate: float | None) -> str:
    return f"fixed {rate:g} requests/s" if rate else "closed loop"


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc), to divide by the requests it forwarded.

    Read from the scheduler's per-thread run time (``/proc/PID/task/*/schedstat``, in
    nanoseconds) where the kernel keeps it: ``/proc/PID/stat``'s user and system times are
    sampled at the clock tick (10 ms here), which at 0.1-0.2 ms per request left each round's
    figure a few dozen ticks and ratios ±10% apart between runs. Threads alive at both reads
    are counted; every process measured here keeps its threads for its lifetime.
    """
    tasks = Path(f"/proc/{pid}/task")
    try:
        return sum(int((task / "schedstat").read_text().split()[0]) for task in tasks.iterdir()) / 1e9
    except (FileNotFoundError, ValueError, IndexError):  # no schedstat (CONFIG_SCHED_INFO off): clock ticks
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: ``direct``: ``pruneops serve``; ``kserve``: the peer server (benchmarks/kserve_peer.py) on the
#: same ONNX file; ``sidecar`` (compiled), ``sidecar_python``, ``nginx`` and ``bare``: proxies in front of ``direct``.
PATHS = ("direct", "kserve", "sidecar", "sidecar_python", "nginx", "bare")

NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {home}/nginx-body;
    proxy_temp_path {home}/nginx-proxy;
    fastcgi_temp_path {home}/nginx-fastcgi;
    uwsgi_temp_path {home}/nginx-uwsgi;
    scgi_temp_path {home}/nginx-scgi;
    upstream model {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(home: str, upstream: int, port: int) -> subprocess.Popen[bytes]:
    """Debian's nginx as a plain reverse proxy: one process (one worker), keep-alive upstream, no log."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx is not installed: apt-get install nginx-light (the peer proxy)")
    conf = Path(home) / "nginx.conf"
    conf.write_text(NGINX_CONF.format(home=home, upstream=upstream, port=port))
    return subprocess.Popen([nginx, "-p", home, "-c", str(conf), "-e", f"{home}/nginx-error.log"])


def compare(
    ports: dict[str, int], args: argparse.Namespace, rate: float | None, pids: dict[str, int]
) -> dict[str, Any]:
    """Rounds of every path at one load, in rotating order; stats per path and what each added.

    ``bare`` is ``benchmarks/bare_proxy.py``: a hop through a Python process that does no work,
    the floor any Python sidecar pays on this machine. Besides the pooled percentiles: each
    proxy's added p50 and p99 per round against that round's direct path (their spread shows
    the noise, and their median is robust to one disturbed round), and each proxy's CPU per
    forwarded request (user + system, the kernel's loopback work included).
    """
    paths = tuple(ports)  # PATHS, and ``before`` with --compare-tree
    proxies = tuple(name for name in paths if name not in ("direct", "kserve"))
    samples: dict[str, list[float]] = {name: [] for name in paths}
    errors = dict.fromkeys(paths, 0)
    round_p50: dict[str, list[float]] = {name: [] for name in paths}
    round_p99: dict[str, list[float]] = {name: [] for name in paths}
    cpu = dict.fromkeys(pids, 0.0)
    for index in range(args.rounds):
        turn = index % len(paths)
        for name in paths[turn:] + paths[:turn]:  # each path takes every place in the order in turn
            cpu_before = cpu_seconds(pids[name]) if name in pids else 0.0
            latencies, failed = asyncio.run(round_of(ports[name], args.clients, args.seconds, rate))
            if name in pids:
                cpu[name] += cpu_seconds(pids[name]) - cpu_before
            print(f"{name} {result_load(rate)}: {len(latencies)} requests, {failed} errors", file=sys.stderr)
            samples[name] += latencies
            errors[name] += failed
            round_p50[name].append(float(np.percentile(latencies, 50)) * 1000)
            round_p99[name].append(float(np.percentile(latencies, 99)) * 1000)
    seconds = args.rounds * args.seconds
    result: dict[str, Any] = {"load": result_load(rate)}
    for name in paths:
        result[name] = stats(samples[name], seconds) | {"errors": errors[name]}
    for name in proxies:
        added: dict[str, Any] = {}
        for key in ("p50", "p90", "p99"):
            added[f"added_{key}_ms"] = result[name][f"{key}_ms"] - result["direct"][f"{key}_ms"]
            added[f"ratio_{key}"] = result[name][f"{key}_ms"] / result["direct"][f"{key}_ms"]
        for key, rounds in (("p50", round_p50), ("p99", round_p99)):
            per_round = [p - d for d, p in zip(rounds["direct"], rounds[name], strict=True)]
            added[f"added_{key}_ms_per_round"] = per_round
            added[f"added_{key}_ms_median_of_rounds"] = float(np.median(per_round))
        result[f"{name}_vs_direct"] = added
    per_request = {name: used * 1000 / max(1, len(samples[name])) for name, used in cpu.items()}
    result["cpu_ms_per_request"] = per_request
    result["server_vs_kserve"] = {
        "rps_ratio": result["direct"]["rps"] / result["kserve"]["rps"],
        "cpu_ratio": per_request["direct"] / per_request["kserve"],
        "p99_ratio": result["direct"]["p99_ms"] / result["kserve"]["p99_ms"],
    }
    for sidecar in ("sidecar", "sidecar_python"):
        result[f"{sidecar}_vs_nginx"] = {
            "cpu_ratio": per_request[sidecar] / per_request["nginx"],
            "added_p50_ms_minus_nginx": result[f"{sidecar}_vs_direct"]["added_p50_ms_median_of_rounds"]
            - result["nginx_vs_direct"]["added_p50_ms_median_of_rounds"],
        }
    result["sidecar_vs_sidecar_python"] = {"cpu_ratio": per_request["sidecar"] / per_request["sidecar_python"]}
    if "before" in per_request:  # --compare-tree: the same sidecar options, another version's code
        result["sidecar_vs_before"] = {
            "cpu_ratio": per_request["sidecar"] / per_request["before"],
            "before_vs_nginx_cpu_ratio": per_request["before"] / per_request["nginx"],
        }
    return result


def sidecar_envs(env: dict[str, str], args: argparse.Namespace, home: Path) -> dict[str, dict[str, str]]:
    """Each sidecar's environment: ``sidecar`` from the compiled wheel, ``sidecar_python`` from this
    checkout, ``before`` (with ``--compare-tree``) from another version's package tree.

    Each is checked: a sidecar that would import its code from elsewhere stops the benchmark
    rather than measure one version twice.
    """
    site = args.compiled_site or compiled_site.build(home / "compiled")
    envs = {"sidecar": checked_env(env, site, compiled_site.compiled_modules(), ".so"), "sidecar_python": env}
    if args.compare_tree:
        envs["before"] = checked_env(env, args.compare_tree, ("pruneops.serving.sidecar",), ".py")
    return envs


def checked_env(env: dict[str, str], site: Path, modules: tuple[str, ...], suffix: str) -> dict[str, str]:
    """``env`` importing pruneops from ``site``, once ``modules`` are seen to load from there as ``suffix`` files."""
    with_site = compiled_site.site_env(env, site)
    if stray := compiled_site.strays(with_site, site, modules, suffix):
        raise SystemExit(f"{site}: " + ", ".join(f"{name} would come from {file}" for name, file in stray.items()))
    return with_site


def start_sidecar(
    cli: list[str], env: dict[str, str], upstream: int, port: int, args: argparse.Namespace
) -> subprocess.Popen[bytes]:
    """``pruneops sidecar`` on ``port`` in front of the server on ``upstream``, as the benchmark runs it."""
    command = [*cli, "sidecar", "--upstream", f"http://127.0.0.1:{upstream}", "--port", str(port),
               "--max-in-flight", str(args.clients * 2), "--drift-interval", str(args.drift_interval)]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rates", type=float, nargs="*", default=[50.0, 100.0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--compare-tree", type=Path, default=None,
                        help="a package tree of another pruneops version (scripts/package_tree.py): its sidecar "
                        "runs as path 'before' and the result goes to serving_overhead_before_after.json")  # fmt: skip
    parser.add_argument("--compiled-site", type=Path, default=None,
                        help="a compiled wheel installed there (scripts/compiled_site.py), not built anew")  # fmt: skip
    parser.add_argument("--drift-interval", type=float, default=0.0,
                        help="the sidecar's drift worker; 0 (default) measures the proxy alone")  # fmt: skip
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="pruneops-bench-")
    env = {**os.environ, "PRUNEOPS_HOME": home, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run([sys.executable, "-m", "pruneops.cli", "init-demo"], env=env, check=True, capture_output=True)
    ports = {name: free_port() for name in PATHS + (("before",) if args.compare_tree else ())}
    envs = sidecar_envs(env, args, Path(home))
    onnx = next(Path(home).rglob("model.onnx"))  # v1 of the demo model, as the registry holds it
    cli = [sys.executable, "-m", "pruneops.cli"]
    server = subprocess.Popen([*cli, "serve", "--model", "digits", "--port", str(ports["direct"])], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    sidecars = {name: start_sidecar(cli, envs[name], ports["direct"], ports[name], args) for name in envs}
    bare = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bare_proxy.py")),
                             f"http://127.0.0.1:{ports['direct']}", str(ports["bare"])], env=env)  # fmt: skip
    peer = subprocess.Popen([sys.executable, str(Path(__file__).with_name("kserve_peer.py")), str(onnx),
                             str(ports["kserve"])], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    nginx = start_nginx(home, ports["direct"], ports["nginx"])
    try:
        wait_http(f"http://127.0.0.1:{ports['direct']}/v2/health/ready", server, timeout=120)
        wait_http(f"http://127.0.0.1:{ports['kserve']}/v2/health/ready", peer, timeout=120)
        wait_http(f"http://127.0.0.1:{ports['nginx']}/v2/health/ready", nginx, timeout=60)
        for name, process in sidecars.items():
            wait_http(f"http://127.0.0.1:{ports[name]}/metrics", process, timeout=120)
        wait_http(f"http://127.0.0.1:{ports['bare']}/v2/health/ready", bare, timeout=60)
        pids = {"direct": server.pid, "kserve": peer.pid, "nginx": nginx.pid, "bare": bare.pid}
        pids |= {name: process.pid for name, process in sidecars.items()}
        for name in ports:  # warm up every path
            asyncio.run(round_of(ports[name], args.clients, 2.0, None))
        result: dict[str, Any] = {
            "benchmark": "serving_overhead",
            "clients": args.clients,
            "rounds_per_path": args.rounds,
            "seconds_per_round": args.seconds,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "model": "digits CNN (ONNX Runtime CPU), batch 1, V2 JSON",
            "sidecar_drift_interval_s": args.drift_interval,
            "cpu_source": "scheduler run time (/proc/PID/task/*/schedstat)",
            "fixed_rate": [compare(ports, args, rate, pids) for rate in args.rates],
            "closed_loop": compare(ports, args, None, pids),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        result["sidecar_build"] = {"sidecar": "mypyc-compiled wheel (PRUNEOPS_COMPILE=1)",
                                   "sidecar_python": "Python source (editable install)"}  # fmt: skip
        if args.compare_tree:
            result["before_tree"] = str(args.compare_tree)
        name = "serving_overhead_before_after.json" if args.compare_tree else "serving_overhead.json"
        (args.out / name).write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    finally:
        for process in (nginx, peer, bare, *sidecars.values(), server):
            process.terminate()
            process.wait(timeout=20)


if __name__ == "__main__":
    main()
