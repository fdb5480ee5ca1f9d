"""`pruneops demo`, the README's main command, end to end with its closed-loop stage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pruneops.monitoring.localstack import MISSING_BINARIES, have_binaries

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not have_binaries(), reason=MISSING_BINARIES),
]


def test_demo_runs_all_four_stages(tmp_path: Path) -> None:
    env = {**os.environ, "PRUNEOPS_HOME": str(tmp_path / "state"), "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-m", "pruneops.cli", "demo"], env=env, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    text = " ".join(out.stdout.split())
    assert "2. running the pipeline" in text and "digits v2 (from v1): gate passed, alias challenger" in text
    assert "ok finetune" in text and "speedup onnxruntime batch 32:" in text and "report: " in text
    assert "analysis promoted v2" in text
    assert "alert PruneopsLatencyRegression" in text
    assert "v2 serving again" in text and "failed requests: 0" in text
