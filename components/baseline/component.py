"""Step 1: fetch the source version from the registry and measure the dense model."""

from kfp import dsl
from kfp.dsl import Metrics, Model, Output

from pruneops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def baseline(
    model_name: str,
    version: str,
    task: str,
    tracking_uri: str,
    dense_model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """Download ``model_name`` version ``version`` and log the task's metrics of the dense model."""
    from pruneops import steps

    with steps.report_failure("baseline"):
        steps.use_tracking_uri(tracking_uri)
        for key, value in steps.baseline(model_name, version, task, dense_model.path).items():
            metrics.log_metric(key, value)
        dense_model.metadata.update({"model_name": model_name, "version": version})
