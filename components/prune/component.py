"""Step 2: prune the dense model as the recipe says (iterative schedules included)."""

from kfp import dsl
from kfp.dsl import Input, Metrics, Model, Output

from pruneops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def prune(
    dense_model: Input[Model],
    recipe: str,
    task: str,
    pruned_model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """Prune; the output folder holds the model, its masks and ``prune_report.json``."""
    from pruneops import steps

    with steps.report_failure("prune"):
        report = steps.prune(dense_model.path, steps.recipe_from_json(recipe), task, pruned_model.path)
        metrics.log_metric("sparsity", report["sparsity"])
        metrics.log_metric("params_after", report["params_after"])
        if report.get("macs_after"):
            metrics.log_metric("macs_after", report["macs_after"])
