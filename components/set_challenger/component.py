"""Step 6 (only when the gate passed): give the new version the alias ``challenger``."""

from kfp import dsl

from pruneops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def set_challenger(model_name: str, version: str, tracking_uri: str) -> None:
    """Point ``challenger`` at ``version``; the rollout controller analyses it from there."""
    from pruneops import steps

    with steps.report_failure("set_challenger"):
        steps.use_tracking_uri(tracking_uri)
        steps.set_challenger(model_name, version)
