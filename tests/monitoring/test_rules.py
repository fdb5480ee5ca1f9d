"""The Prometheus rules load in Prometheus's own checker and pass their promtool unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pruneops.monitoring.localstack import find_binary

RULES_DIR = Path(__file__).parents[2] / "monitoring" / "prometheus"
promtool = find_binary("promtool")
needs_promtool = pytest.mark.skipif(promtool is None, reason="promtool not found: run `make tools`")


def run_promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], cwd=cwd, capture_output=True, text=True)


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    out = run_promtool("check", "rules", "rules.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 10 rules found" in out.stdout


@needs_promtool
def test_rules_unit_tests_pass() -> None:
    out = run_promtool("test", "rules", "rules.test.yaml")
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A rules file whose regression threshold is raised must fail the same unit tests."""
    broken = (RULES_DIR / "rules.yaml").read_text().replace("1.5 * max by (cluster", "500 * max by (cluster")
    (tmp_path / "rules.yaml").write_text(broken)
    shutil.copy(RULES_DIR / "rules.test.yaml", tmp_path)
    out = run_promtool("test", "rules", "rules.test.yaml", cwd=tmp_path)
    assert out.returncode != 0
    assert "PruneopsLatencyRegression" in out.stdout + out.stderr


def test_rollback_alerts_are_the_ones_a_rollback_can_fix() -> None:
    rules = yaml.safe_load((RULES_DIR / "rules.yaml").read_text())
    actions = {r["alert"]: r["labels"]["action"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert actions == {
        "PruneopsLatencyRegression": "rollback",
        "PruneopsHighErrorRatio": "rollback",
        "PruneopsLatencySLO": "notify",
        "PruneopsInputDrift": "notify",
    }


def test_only_server_faults_feed_the_error_ratio() -> None:
    """The rules count exactly the codes the sidecar and the controller call server faults."""
    from pruneops.monitoring.metrics import SERVER_FAULT_REGEX

    rules = yaml.safe_load((RULES_DIR / "rules.yaml").read_text())
    by_name = {r.get("record") or r.get("alert"): r["expr"] for g in rules["groups"] for r in g["rules"]}
    ratio = by_name["model_version:pruneops_errors:ratio_rate1m"]
    assert f'code=~"{SERVER_FAULT_REGEX}"' in ratio and SERVER_FAULT_REGEX == "500|502|503|504"
    assert "5.." not in ratio


def test_every_rule_keeps_the_install_labels_and_every_alert_has_a_runbook() -> None:
    """Tenancy and routing: what kube-prometheus-stack and two installs in one Prometheus need."""
    import re

    rules = yaml.safe_load((RULES_DIR / "rules.yaml").read_text())
    runbooks = (RULES_DIR.parents[1] / "docs" / "runbooks.md").read_text().lower()
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        name = rule.get("record") or rule["alert"]
        groupings = re.findall(r"(?:sum|max) by \(([^)]*)\)", rule["expr"])
        assert groupings, name
        for grouping in groupings:
            labels = {label.strip() for label in grouping.split(",")}
            # pruneops_alias_info comes from the controller, another job: joined on the rest.
            assert {"cluster", "namespace"} <= labels and ("job" in labels or "pruneops_alias_info" in rule["expr"]), (
                name, grouping)  # fmt: skip
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
            base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
            assert base == "https://github.com/pruneops/pruneops/blob/main/docs/runbooks.md", name
            assert anchor == name.lower() and f"## {name.lower()}" in runbooks, name
