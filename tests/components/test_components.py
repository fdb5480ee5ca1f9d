"""Each component run once through kfp.local.SubprocessRunner, with its own outputs checked.

kfp.local passes input artifacts only inside a pipeline, so each component that takes
artifacts runs in a one-step pipeline whose inputs come from ``dsl.importer`` (the previous
step's output folders); components without artifact inputs are called directly.
(No `from __future__ import annotations`: KFP reads the pipelines' annotations.)
"""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from kfp import dsl, local
from kfp.dsl import HTML, Artifact, Model

from pruneops import settings
from pruneops.components.baseline.component import baseline
from pruneops.components.finetune.component import finetune
from pruneops.components.prune.component import prune
from pruneops.components.register.component import register
from pruneops.components.set_challenger.component import set_challenger
from pruneops.components.validate.component import validate
from pruneops.demo import DEMO_RECIPE, init_demo
from pruneops.registry import CHALLENGER, Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TASK = "pruneops.tasks.digits:task"
RECIPE = json.dumps(DEMO_RECIPE)
META = {"model_name": "digits", "version": "1"}


@dsl.pipeline
def prune_only(dense_uri: str) -> Model:
    dense = dsl.importer(artifact_uri=dense_uri, artifact_class=Model, metadata=META)
    return prune(dense_model=dense.output, recipe=RECIPE, task=TASK).outputs["pruned_model"]


@dsl.pipeline
def finetune_only(pruned_uri: str, dense_uri: str) -> Model:
    pruned = dsl.importer(artifact_uri=pruned_uri, artifact_class=Model)
    dense = dsl.importer(artifact_uri=dense_uri, artifact_class=Model, metadata=META)
    return finetune(pruned_model=pruned.output, dense_model=dense.output, recipe=RECIPE, task=TASK).outputs[
        "finetuned_model"
    ]


class Checked(NamedTuple):
    passed: bool
    evidence: Artifact
    report: HTML


@dsl.pipeline
def validate_only(dense_uri: str, candidate_uri: str) -> Checked:
    dense = dsl.importer(artifact_uri=dense_uri, artifact_class=Model, metadata=META)
    candidate = dsl.importer(artifact_uri=candidate_uri, artifact_class=Model)
    task = validate(dense_model=dense.output, candidate=candidate.output, recipe=RECIPE, task=TASK, target="")
    return Checked(task.outputs["Output"], task.outputs["evidence"], task.outputs["report"])


@dsl.pipeline
def register_only(candidate_uri: str, evidence_uri: str, report_uri: str, tracking_uri: str) -> str:
    candidate = dsl.importer(artifact_uri=candidate_uri, artifact_class=Model)
    evidence = dsl.importer(artifact_uri=evidence_uri, artifact_class=Artifact)
    report = dsl.importer(artifact_uri=report_uri, artifact_class=HTML)
    return register(
        candidate=candidate.output, evidence=evidence.output, report=report.output, model_name="digits",
        parent_version="1", recipe=RECIPE, task=TASK, tracking_uri=tracking_uri,
    ).output  # fmt: skip


def test_each_component(tmp_path: Path) -> None:
    init_demo("digits")
    uri = settings.tracking_uri()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    base = baseline(model_name="digits", version="1", task=TASK, tracking_uri=uri)
    dense = Path(base.outputs["dense_model"].path)
    assert {"arch.json", "model.safetensors", "metrics.json"} <= {p.name for p in dense.iterdir()}
    assert base.outputs["dense_model"].metadata == META
    assert base.outputs["metrics"].metadata["accuracy"] >= 0.95

    pruned = Path(prune_only(dense_uri=str(dense)).output.path)
    report = json.loads((pruned / "prune_report.json").read_text())
    assert report["pattern"] == "channels" and report["params_after"] < report["params_before"] / 3

    tuned = Path(finetune_only(pruned_uri=str(pruned), dense_uri=str(dense)).output.path)
    assert json.loads((tuned / "finetune.json").read_text())["epochs"] >= 1

    checked = validate_only(dense_uri=str(dense), candidate_uri=str(tuned)).outputs
    assert checked["passed"] is True
    evidence = Path(checked["evidence"].path)
    assert json.loads((evidence / "evidence.json").read_text())["gate"]["passed"]
    assert (evidence / "model.onnx").is_file()
    assert "<h1>digits: pruning run</h1>" in Path(checked["report"].path).read_text()

    version = register_only(
        candidate_uri=str(tuned), evidence_uri=str(evidence), report_uri=checked["report"].path, tracking_uri=uri
    ).output
    assert version == "2" and Registry().version("digits", version).tag("source") == "pipeline"

    set_challenger(model_name="digits", version=version, tracking_uri=uri)
    assert Registry().aliases("digits")[CHALLENGER] == "2"
