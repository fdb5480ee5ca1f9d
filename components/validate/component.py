"""Step 4: measure the candidate on the target against the dense model, and apply the gates."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Model, Output

from pruneops.components import BASE_IMAGE, GPU_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate(
    dense_model: Input[Model],
    candidate: Input[Model],
    recipe: str,
    task: str,
    target: str,
    evidence: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> bool:
    """Return whether the gate passed; evidence (JSON + ONNX file) and the HTML report are artifacts."""
    from pathlib import Path

    from pruneops import report as report_module
    from pruneops import steps

    with steps.report_failure("validate"):
        parsed = steps.with_target(steps.recipe_from_json(recipe), target)
        passed, measured = steps.validate(dense_model.path, candidate.path, parsed, task, evidence.path)
        name = dense_model.metadata.get("model_name", "model")
        Path(report.path).write_text(report_module.render(measured, title=f"{name}: pruning run"))
        for metric, value in measured.metrics().items():  # the names MLflow gets too
            metrics.log_metric(metric, value)
        metrics.log_metric("gate_passed", 1.0 if passed else 0.0)
        return passed


#: The same step in the CUDA image (torch with cuSPARSELt, onnxruntime-gpu), for GPU nodes.
validate_gpu = dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)(validate.python_func)
