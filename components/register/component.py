"""Step 5: register the candidate as a new MLflow version, gate passed or failed."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Model

from pruneops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(
    candidate: Input[Model],
    evidence: Input[Artifact],
    report: Input[HTML],
    model_name: str,
    parent_version: str,
    recipe: str,
    task: str,
    tracking_uri: str,
    run_id: str = "",
) -> str:
    """Return the new version number; its tags carry lineage, gate verdict and reasons.

    ``run_id`` (the pipeline's ``PIPELINE_JOB_ID_PLACEHOLDER``) makes a retried step return
    the version its first attempt registered instead of registering twice.
    """
    from pruneops import steps

    with steps.report_failure("register"):
        steps.use_tracking_uri(tracking_uri)
        return steps.register(
            model_name,
            parent_version,
            candidate.path,
            evidence.path,
            steps.recipe_from_json(recipe),
            task,
            report.path,
            run_key=run_id,
        )
