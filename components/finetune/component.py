"""Step 3: recover accuracy with the masks held, distilling from the dense model."""

from kfp import dsl
from kfp.dsl import Input, Metrics, Model, Output

from pruneops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def finetune(
    pruned_model: Input[Model],
    dense_model: Input[Model],
    recipe: str,
    task: str,
    finetuned_model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """Fine-tune the pruned model (masks re-applied from ``masks.safetensors``)."""
    from pruneops import steps

    with steps.report_failure("finetune"):
        summary = steps.finetune(
            pruned_model.path, dense_model.path, steps.recipe_from_json(recipe), task, finetuned_model.path
        )
        metrics.log_metric("epochs", summary["epochs"])
        if summary["best_metric"] is not None:
            metrics.log_metric("best_metric", summary["best_metric"])
