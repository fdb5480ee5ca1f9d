"""User-space instructions per forwarded request: the sidecar against nginx and a bare Python proxy.

CPU time on a shared 2-core machine moves by ±10% between runs of
``benchmarks/serving_overhead.py``; instructions counted by Valgrind's callgrind do not,
so a change to the sidecar's hot path can be judged from one run. Each proxy runs under
callgrind in front of the same ``pruneops serve`` (digits), takes a warm-up, has its
counters zeroed (``callgrind_control -z``), forwards ``--requests`` V2 JSON requests at a
fixed rate over 10 keep-alive connections, and has its counters dumped. The count is every
instruction the process ran in user space in that window (Python, uvloop, httptools,
libc; nginx's own code), divided by the requests; the kernel's share (the system calls,
the same for all three, ``serving_overhead.py`` says) is not counted.

``sidecar`` is the sidecar as the container images ship it, its hot path compiled by mypyc
(built first, or taken from ``--compiled-site DIR``: see ``serving_overhead.py``);
``sidecar_python`` is the same code run as Python source. ``--compare-tree DIR`` also counts
the sidecar run from another version's code (a package tree, as for ``serving_overhead.py
--compare-tree``), as ``before``.

What it cannot say: time. Python's instructions run slower than nginx's (more cache misses
per instruction), so the CPU-time ratio in ``serving_overhead.json`` is the one the issue's
goal reads; this one shows where a change moved the work.

Run: ``.venv/bin/python benchmarks/proxy_instructions.py`` (needs ``valgrind`` and ``nginx``:
``apt-get install valgrind nginx-light``; about 4 minutes). Writes
``benchmarks/results/proxy_instructions.json``.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's benchmarks
from benchmarks.serving_overhead import NGINX_CONF, round_of, sidecar_envs
from pruneops.monitoring.localstack import free_port, wait_http

RESULTS = Path(__file__).parent / "results"
PROXIES = ("sidecar", "sidecar_python", "nginx", "bare")  # sidecar: compiled, as the images ship it
CLIENTS = 10


def callgrind_total(dump_dir: Path, pid: int) -> int:
    """The instruction total of the newest callgrind dump of ``pid`` (its ``totals:`` line).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "callgrind.out.7.1").write_text("events: Ir\\nsummary: 1234\\ntotals: 1234\\n")
    >>> callgrind_total(folder, 7)
    1234
    """
    dumps = sorted(dump_dir.glob(f"callgrind.out.{pid}*"), key=lambda path: path.stat().st_mtime)
    for line in dumps[-1].read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[-1]}")


def instructions_per_request(name: str, pid: int, port: int, dump_dir: Path, requests: int, rate: float) -> float:
    """Zero ``pid``'s counters, send ``requests`` at ``rate`` requests/s, dump, divide."""
    asyncio.run(round_of(port, CLIENTS, 2.0, rate))  # warm-up: connections, caches, code paths
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    latencies, errors = asyncio.run(round_of(port, CLIENTS, requests / rate, rate))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    time.sleep(1.0)  # the dump is written by the process itself
    if errors or len(latencies) != requests:
        raise RuntimeError(f"{name}: {len(latencies)} answers, {errors} errors for {requests} requests")
    return callgrind_total(dump_dir, pid) / requests


def under_callgrind(command: list[str], dump_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` under callgrind, counting instructions, dumps written to ``dump_dir``."""
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump_dir}/callgrind.out.%p"]
    return subprocess.Popen([*valgrind, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--compare-tree", type=Path, default=None, help="another version's package tree")
    parser.add_argument("--compiled-site", type=Path, default=None, help="a compiled wheel already installed there")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install valgrind")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx is not installed: apt-get install nginx-light (the peer proxy)")
    home = Path(tempfile.mkdtemp(prefix="pruneops-instr-"))
    dump_dir = home / "callgrind"
    dump_dir.mkdir()
    env = {**os.environ, "PRUNEOPS_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cli = [sys.executable, "-m", "pruneops.cli"]
    subprocess.run([*cli, "init-demo"], env=env, check=True, capture_output=True)
    envs = {"nginx": env, "bare": env} | sidecar_envs(env, args, home)
    proxies = (*PROXIES, "before") if args.compare_tree else PROXIES
    ports = {name: free_port() for name in ("direct", *proxies)}
    upstream = f"http://127.0.0.1:{ports['direct']}"
    server = subprocess.Popen([*cli, "serve", "--model", "digits", "--port", str(ports["direct"])], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    conf = home / "nginx.conf"
    conf.write_text(NGINX_CONF.format(home=home, upstream=ports["direct"], port=ports["nginx"]))
    commands = {
        # The sidecars are one command, each run with its own code first on the import path (envs).
        name: [*cli, "sidecar", "--upstream", upstream, "--port", str(ports.get(name)), "--drift-interval", "0"]
        for name in ("sidecar", "sidecar_python", "before")
    } | {
        "nginx": [nginx, "-p", str(home), "-c", str(conf), "-e", f"{home}/nginx-error.log"],
        "bare": [sys.executable, str(Path(__file__).with_name("bare_proxy.py")), upstream, str(ports["bare"])],
    }

    result: dict[str, Any] = {
        "benchmark": "proxy_instructions",
        "requests": args.requests,
        "rate_per_s": args.rate,
        "clients": CLIENTS,
        "platform": platform.platform(),
        "valgrind": subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip(),
        "model": "digits CNN (ONNX Runtime CPU) behind every proxy, batch 1, V2 JSON",
        "sidecar_sampling": "every 10th inference decoded into the drift window (the default); drift worker off",
        "instructions_per_request": {},
    }
    try:
        wait_http(f"{upstream}/v2/health/ready", server, timeout=120)
        for name in proxies:  # one at a time: each gets the machine to itself under callgrind
            proxy = under_callgrind(commands[name], dump_dir, envs[name])
            try:
                wait_http(f"http://127.0.0.1:{ports[name]}/v2/health/ready", proxy, timeout=300)
                count = instructions_per_request(name, proxy.pid, ports[name], dump_dir, args.requests, args.rate)
            finally:
                proxy.terminate()
                proxy.wait(timeout=60)
            result["instructions_per_request"][name] = round(count)
            print(f"{name}: {count:,.0f} instructions per request", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=20)
    counts = result["instructions_per_request"]
    result["sidecar_vs_nginx"] = counts["sidecar"] / counts["nginx"]
    result["sidecar_vs_bare"] = counts["sidecar"] / counts["bare"]
    result["sidecar_python_vs_nginx"] = counts["sidecar_python"] / counts["nginx"]
    result["sidecar_vs_sidecar_python"] = counts["sidecar"] / counts["sidecar_python"]
    if args.compare_tree:
        result["before_tree"] = str(args.compare_tree)
        result["sidecar_vs_before"] = counts["sidecar"] / counts["before"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "proxy_instructions.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
