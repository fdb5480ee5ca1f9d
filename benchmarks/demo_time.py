"""How long ``pruneops demo`` takes from nothing (empty state folder), as a user runs it, by stage.

Goal (issue 19): all four stages in at most 90 s on 2 cores, once ``.venv`` exists. Runs the
CLI ``--runs`` times, each in a fresh ``PRUNEOPS_HOME``, reads its output line by line as it
comes, and times each stage from the lines that open and close it:

- ``baseline``: process start to "1. champion" (imports, training and registering the baseline);
- ``pipeline``: "2. running the pipeline" to "3. result" (the six KFP steps, kfp.local);
- ``closed_loop``: "4. closed loop" to "done" (stack start, live analysis and promotion,
  the regression drill and its rollback).

Writes ``benchmarks/results/demo_time.json``. Run: ``.venv/bin/python benchmarks/demo_time.py``.
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
from typing import Any

RESULTS = Path(__file__).parent / "results"
STAGES = ("baseline", "pipeline", "closed_loop")
#: The output line that ends each stage (the baseline stage starts with the process).
MARKS = {"1. champion": "baseline_done", "2. running": "pipeline_start", "3. result": "pipeline_done",
         "4. closed loop": "loop_start", "done in": "loop_done"}  # fmt: skip


def one_run(home: str) -> dict[str, Any]:
    """Run the demo once in ``home``; its wall time and each stage's, from when its lines appeared."""
    env = {**os.environ, "PRUNEOPS_HOME": home, "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    seen: dict[str, float] = {}
    with subprocess.Popen([sys.executable, "-m", "pruneops.cli", "demo"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as demo:  # fmt: skip
        assert demo.stdout is not None
        for line in demo.stdout:
            for mark, name in MARKS.items():
                if line.lstrip().startswith(mark) and name not in seen:
                    seen[name] = time.perf_counter() - started
        stderr = demo.stderr.read() if demo.stderr else ""
    total = time.perf_counter() - started
    if demo.returncode != 0 or len(seen) != len(MARKS):
        raise SystemExit(f"demo failed (exit {demo.returncode}, saw {sorted(seen)}):\n{stderr[-2000:]}")
    stages = {
        "baseline": seen["baseline_done"],
        "pipeline": seen["pipeline_done"] - seen["pipeline_start"],
        "closed_loop": seen["loop_done"] - seen["loop_start"],
    }
    return {"seconds": total, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as home:
            runs.append(one_run(home))
            stages = ", ".join(f"{name} {sec:.1f}s" for name, sec in runs[-1]["stages"].items())
            print(f"demo: {runs[-1]['seconds']:.1f}s ({stages})")
    totals = [run["seconds"] for run in runs]
    out = {
        "benchmark": "demo_time",
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "runs": runs,
        "seconds": totals,
        "median_s": statistics.median(totals),
        "median_stage_s": {name: statistics.median(run["stages"][name] for run in runs) for name in STAGES},
        "goal_s": 90,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo_time.json").write_text(json.dumps(out, indent=2))
    print(f"median {out['median_s']:.1f}s (goal <= 90s); wrote {args.out / 'demo_time.json'}")


if __name__ == "__main__":
    main()
