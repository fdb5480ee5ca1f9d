"""Time from a latency breach to the previous version serving again, with the real local stack.

Each repeat starts the stack (model server, sidecar, controller, Prometheus with a 5 s
scrape and evaluation interval, Alertmanager) on a fresh SQLite registry with the digits
baseline as champion, sends ~20 requests/s of real digits images through the sidecar, then
runs the drill (``monitoring/drill.py``): a regressed copy of the champion is promoted, and
the clock runs from the first request it answers to the first request the previous version
answers again. Goal: <= 15 s median (issue 19; it was 30 s). Writes ``benchmarks/results/closed_loop.json``.

Run: ``.venv/bin/python benchmarks/closed_loop.py`` (needs prometheus and alertmanager).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def one_run() -> dict:
    """One fresh registry and stack, one drill; returns the drill's figures."""
    home = tempfile.mkdtemp(prefix="pruneops-loop-")
    env = {**os.environ, "PRUNEOPS_HOME": home, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_LOGGING_LEVEL": "WARNING"}
    env.pop("MLFLOW_TRACKING_URI", None)
    script = r"""
import json, sys
from dataclasses import asdict
from pathlib import Path
from pruneops.monitoring.drill import closed_loop
from pruneops.demo import init_demo
from pruneops.tasks.digits import task
init_demo("digits")
report = closed_loop("digits", Path(sys.argv[1]), task.example_input(300).numpy())
print(json.dumps(asdict(report.drill)))
"""
    out = subprocess.run([sys.executable, "-c", script, str(Path(home) / "stack")], env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.repeats)]
    served = [r["breach_to_served_s"] for r in runs if r["breach_to_served_s"] is not None]
    rollback = [r["breach_to_rollback_s"] for r in runs if r["breach_to_rollback_s"] is not None]
    result = {
        "benchmark": "closed_loop",
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "scrape_interval_s": 5,
        "runs": runs,
        "restored_runs": len(served),
        "median_breach_to_rollback_s": float(np.median(rollback)) if rollback else None,
        "median_breach_to_served_s": float(np.median(served)) if served else None,
        "max_breach_to_served_s": max(served) if served else None,
        "goal_s": 15.0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "closed_loop.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
