"""How long ``pruneops demo`` takes from nothing (empty state folder), as a user runs it.

Goal from the issue: under 3 minutes on 2 cores. Runs the CLI ``--runs`` times, each in a
fresh ``PRUNEOPS_HOME``, and writes ``benchmarks/results/demo_time.json`` with each wall time.

Run: ``.venv/bin/python benchmarks/demo_time.py``.
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
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    seconds = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "PRUNEOPS_HOME": home}
            env.pop("MLFLOW_TRACKING_URI", None)
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "pruneops.cli", "demo"], env=env, capture_output=True, text=True
            )
            seconds.append(time.perf_counter() - started)
            if result.returncode != 0:
                raise SystemExit(f"demo failed:\n{result.stderr[-2000:]}")
            print(f"demo: {seconds[-1]:.1f}s")
    out = {
        "benchmark": "demo_time",
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "seconds": seconds,
        "median_s": statistics.median(seconds),
        "goal_s": 180,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo_time.json").write_text(json.dumps(out, indent=2))
    print(f"median {out['median_s']:.1f}s (goal < 180s); wrote {args.out / 'demo_time.json'}")


if __name__ == "__main__":
    main()
