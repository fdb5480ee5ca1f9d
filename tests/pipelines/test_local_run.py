"""The whole pipeline on kfp.local.SubprocessRunner: every component runs once, for real.

One run that passes its gate, one that fails it, one whose prune step fails midway, and
inputs refused before anything runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pruneops.cli import EXIT_GATE_FAILED
from pruneops.demo import DEMO_RECIPE, init_demo
from pruneops.errors import NotFoundError, RecipeError, TaskError
from pruneops.pipelines.runner import PipelineFailed, run_local
from pruneops.recipe import load_recipe, parse_recipe
from pruneops.registry import CHALLENGER, CHAMPION, Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def champion() -> str:
    return init_demo("digits").version


def test_passing_run_registers_a_challenger_with_lineage(champion: str, tmp_path: Path) -> None:
    result = run_local("digits", champion, parse_recipe(DEMO_RECIPE))
    registry = Registry()
    info = registry.version("digits", result.version)
    assert result.version == "2"
    assert registry.aliases("digits") == {CHAMPION: "1", CHALLENGER: "2"}
    tags = info.short_tags()
    assert tags["source"] == "pipeline" and tags["parent_version"] == "1" and tags["gate"] == "passed"
    assert tags["method"] == "magnitude" and tags["pattern"] == "channels"
    assert tags["recipe_sha256"] == parse_recipe(DEMO_RECIPE).sha256()
    assert float(tags["accuracy_drop"]) <= 0.02 and float(tags["speedup"]) >= 1.3
    assert tags["runtime"] == "onnxruntime" and tags["sparse_kernels"] == "none"
    model_dir = registry.download("digits", result.version, tmp_path / "model")
    assert {"arch.json", "model.safetensors", "model.onnx"} <= {p.name for p in model_dir.iterdir()}
    evidence = json.loads(
        (registry.download("digits", result.version, tmp_path / "r", "report") / "evaluation.json").read_text()
    )
    assert evidence["gate"]["passed"] and evidence["onnx"]["max_abs"] < 1e-3
    page = registry.download("digits", result.version, tmp_path / "h", "report") / "report.html"
    assert "<h1>digits: pruning run</h1>" in page.read_text() and "data:image/png;base64," in page.read_text()
    assert len(registry.load_reference("digits", result.version)) == 500
    assert [e.alias for e in registry.history("digits")][-1] == CHALLENGER


def test_failed_gate_is_registered_without_alias_and_exits_3(champion: str, tmp_path: Path) -> None:
    recipe = dict(DEMO_RECIPE, gates={"max_accuracy_drop": 0.02, "min_speedup": 100.0})
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    command = ["run", "--model", "digits", "--version", champion, "--recipe", str(tmp_path / "recipe.yaml")]
    ran = subprocess.run([sys.executable, "-m", "pruneops.cli", *command], capture_output=True, text=True, timeout=900)
    assert ran.returncode == EXIT_GATE_FAILED, ran.stderr[-2000:]
    info = Registry().version("digits", "2")
    assert info.tag("gate") == "failed"
    assert "< required 100.00x on onnxruntime/" in (info.tag("gate_reasons") or "")
    assert "gate failed: digits v2 has no alias:" in ran.stderr and "< required 100.00x" in ran.stderr
    assert Registry().aliases("digits") == {CHAMPION: "1"}
    # What the person reads: one line per step with its duration, KFP's logs in a named file,
    # and a closing summary with every gate reason, the speedups and the report's path.
    out = ran.stdout
    for step in ("baseline", "prune", "finetune", "validate", "register"):
        assert re.search(rf"^  ok +{step} +\d+\.\ds$", out, re.MULTILINE), out
    assert "Executing task" not in out and "KFP Executor" not in out and "Downloading artifacts" not in out
    assert len(out.splitlines()) < 25, out
    log = Path(re.search(r"KFP's logs: (\S+)\)", out)[1])
    assert "KFP Executor" in log.read_text() and "\x1b[" not in log.read_text()
    assert "digits v2 (from v1): gate failed, no alias" in out
    reasons = (info.tag("gate_reasons") or "").split("; ")
    assert all(f"  gate reason: {reason}\n" in out for reason in reasons) and out.count("gate reason: ") == len(reasons)
    assert re.search(r"^  speedup onnxruntime batch 32: \d+\.\d\dx \(p50 ", out, re.MULTILINE), out
    report = Path(re.search(r"^  report: (\S+)$", out, re.MULTILINE)[1])
    assert "<h1>digits: pruning run</h1>" in report.read_text()


def test_step_failing_midway_names_step_and_leaves_registry(champion: str) -> None:
    # Passes every check before the run; the prune step refuses an iterative N:M schedule.
    schedule = {"kind": "iterative", "steps": 2}
    recipe = parse_recipe({"prune": {"method": "magnitude", "pattern": "2:4", "exclude": ["features.0"],
                                     "schedule": schedule}})  # fmt: skip
    before = [v.version for v in Registry().versions("digits")]
    with pytest.raises(PipelineFailed, match=r"step prune failed: PruningError: an N:M pattern has one fixed") as err:
        run_local("digits", champion, recipe)
    log = Path(re.search(r"\(KFP's logs: (\S+)\)$", str(err.value))[1])  # the step's whole output is there
    assert "Task 'prune' finished with status FAILURE" in log.read_text()
    assert [v.version for v in Registry().versions("digits")] == before
    assert Registry().aliases("digits") == {CHAMPION: "1"}


def test_a_failed_triggered_run_is_retried_after_the_fix(champion: str, tmp_path: Path) -> None:
    """`pruneops retry`: a run that failed in a step is recorded on the source version; after
    the recipe is fixed, retry runs it again and records success; a succeeded run is not rerun."""
    broken = {"prune": {"method": "magnitude", "pattern": "2:4", "exclude": ["features.0"],
                        "schedule": {"kind": "iterative", "steps": 2}}}  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(json.dumps(broken))
    (tmp_path / "trigger.yaml").write_text(
        "models:\n  digits: {recipe: recipe.yaml, task: pruneops.tasks.digits:task}\n"
    )
    command = [
        sys.executable,
        "-m",
        "pruneops.cli",
        "retry",
        "digits",
        champion,
        "--config",
        str(tmp_path / "trigger.yaml"),
    ]

    def retry(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=900)

    failed = retry()
    assert failed.returncode == 1 and "step prune failed: PruningError" in failed.stderr, failed.stderr[-2000:]
    tags = Registry().version("digits", champion).short_tags()
    assert tags["trigger_status"] == "failed" and "step prune failed" in tags["trigger_error"]
    assert [v.version for v in Registry().versions("digits")] == [champion]

    (tmp_path / "recipe.yaml").write_text(json.dumps(DEMO_RECIPE))  # the fix
    fixed = retry()
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert "digits v2 (from v1): gate passed, alias challenger" in fixed.stdout
    tags = Registry().version("digits", champion).short_tags()
    assert tags["trigger_status"] == "succeeded" and tags["trigger_result"] == "2" and "trigger_error" not in tags

    again = retry()
    assert again.returncode == 1 and "triggered run succeeded" in again.stderr and "--force" in again.stderr
    assert [v.version for v in Registry().versions("digits")] == [champion, "2"]


@pytest.mark.unit
def test_inputs_refused_before_running(champion: str) -> None:
    recipe = parse_recipe(DEMO_RECIPE)
    with pytest.raises(NotFoundError):
        run_local("digits", "9", recipe)
    with pytest.raises(NotFoundError, match="not registered"):
        run_local("nope", "1", recipe)
    with pytest.raises(TaskError):
        run_local("digits", champion, recipe, task="nowhere:task")
    with pytest.raises(RecipeError):
        load_recipe("prune: {methd: wanda}")
    assert [v.version for v in Registry().versions("digits")] == ["1"]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("prune", "validate", "message"),
    [
        # features.0 has 9 inputs: 2:4 cannot apply, said before the baseline step runs
        ({"method": "magnitude", "pattern": "2:4"}, {}, "digits v1: layer 'features.0' cannot take pattern 2:4"),
        ({"method": "magnitude", "pattern": "heads", "sparsity": 0.5}, {}, "needs attention modules"),
        ({"method": "magnitude", "pattern": "2:4", "include": ["nothing.*"]}, {}, "matches no Linear or Conv2d"),
        ({"method": "magnitude", "pattern": "2:4", "exclude": ["features.0"]},
         {"target": "cuda", "runtimes": ["torch"]}, "no CUDA GPU"),
    ],
)  # fmt: skip
def test_recipe_problems_are_refused_before_any_step(
    champion: str, prune: dict, validate: dict, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from pruneops.errors import PruneopsError
    from pruneops.settings import state_dir

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    recipe = parse_recipe({"prune": prune, "validate": validate} if validate else {"prune": prune})
    with pytest.raises(PruneopsError, match=re.escape(message)):
        run_local("digits", champion, recipe)
    assert not (state_dir() / "kfp").exists(), "no step ran"
    assert [v.version for v in Registry().versions("digits")] == ["1"]


@pytest.mark.unit
def test_the_task_comes_from_the_version_or_the_run_is_refused(champion: str, tmp_path: Path) -> None:
    from pruneops.errors import PruneopsError
    from pruneops.pipelines.runner import check_inputs

    assert check_inputs("digits", champion) == (champion, "pruneops.tasks.digits:task")
    assert check_inputs("digits", "champion", "pruneops.tasks.digits:DigitsTask")[1].endswith(":DigitsTask")
    registry = Registry()
    folder = registry.download("digits", champion, tmp_path / "copy")
    untagged = registry.register("digits", folder, tags={"gate": "passed"}).version  # no pruneops.task
    with pytest.raises(PruneopsError, match=rf"digits v{untagged} has no pruneops.task tag.*pass --task"):
        run_local("digits", untagged, parse_recipe(DEMO_RECIPE))
    assert [v.version for v in registry.versions("digits")] == [champion, untagged]


def test_demo_recipe_matches_the_shipped_example() -> None:
    assert parse_recipe(DEMO_RECIPE) == load_recipe(Path(__file__).parents[2] / "recipes/channels-50-cpu.yaml")
