"""The pipeline: baseline -> prune -> finetune -> validate -> register -> (if passed) challenger.

(No ``from __future__ import annotations`` here: KFP reads the annotations at run time.)

Every step gets its caching, resources, retries and MLflow secret from
:class:`pruneops.pipelines.cluster.ClusterSettings` (compile-time; ``register`` and ``set-challenger``
are never cached). Two compiled variants share this definition. ``cpu`` validates on any node. ``gpu`` places
the validate step on GPU nodes: an accelerator request (``set_accelerator_type`` /
``set_accelerator_limit``) plus a node selector and a toleration through
``kfp.kubernetes``, all taken from :class:`GpuPlacement`.
"""

from dataclasses import dataclass

from kfp import dsl, kubernetes

from pruneops.components.baseline.component import baseline
from pruneops.components.finetune.component import finetune
from pruneops.components.prune.component import prune
from pruneops.components.register.component import register
from pruneops.components.set_challenger.component import set_challenger
from pruneops.components.validate.component import validate, validate_gpu
from pruneops.pipelines.cluster import ClusterSettings

DEFAULT_TASK = "pruneops.tasks.digits:task"


@dataclass(frozen=True)
class GpuPlacement:
    """Where the validate step runs when the target is cuda."""

    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: int = 1
    node_selector_key: str = "nvidia.com/gpu.present"
    node_selector_value: str = "true"
    toleration_key: str = "nvidia.com/gpu"
    toleration_effect: str = "NoSchedule"


def build_pipeline(
    gpu: GpuPlacement | None = None, cluster: ClusterSettings | None = None
) -> dsl.graph_component.GraphComponent:
    """The pipeline, with the validate step on GPU nodes when ``gpu`` is given, and each
    step's settings from ``cluster`` (default: :class:`ClusterSettings`'s defaults).

    >>> build_pipeline().name, build_pipeline(GpuPlacement()).name
    ('prune-and-register', 'prune-and-register-gpu')
    >>> sorted(build_pipeline().pipeline_spec.root.dag.tasks)
    ['baseline', 'condition-1', 'finetune', 'prune', 'register', 'validate']
    """
    settings = cluster or ClusterSettings()

    @dsl.pipeline(
        name="prune-and-register-gpu" if gpu else "prune-and-register",
        description="Prune a registered model, recover, validate on the target, register the result.",
    )
    def prune_and_register(
        model_name: str,
        version: str,
        recipe: str,
        task: str = DEFAULT_TASK,
        target: str = "",
        tracking_uri: str = "",
    ) -> str:
        # Step 1: the dense model and its metrics.
        base = baseline(model_name=model_name, version=version, task=task, tracking_uri=tracking_uri)
        settings.apply(base, "baseline")
        # Step 2: prune as the recipe says.
        pruned = prune(dense_model=base.outputs["dense_model"], recipe=recipe, task=task)
        settings.apply(pruned, "prune")
        # Step 3: recover with masks held, distilling from the dense model.
        tuned = finetune(
            pruned_model=pruned.outputs["pruned_model"],
            dense_model=base.outputs["dense_model"],
            recipe=recipe,
            task=task,
        )
        settings.apply(tuned, "finetune")
        # Step 4: measure on the target and apply the gates (in the CUDA image on GPU nodes).
        checked = (validate_gpu if gpu is not None else validate)(
            dense_model=base.outputs["dense_model"],
            candidate=tuned.outputs["finetuned_model"],
            recipe=recipe,
            task=task,
            target=target,
        )
        settings.apply(checked, "validate")
        if gpu is not None:
            checked.set_accelerator_type(gpu.accelerator_type).set_accelerator_limit(gpu.accelerator_limit)
            kubernetes.add_node_selector(checked, label_key=gpu.node_selector_key, label_value=gpu.node_selector_value)
            kubernetes.add_toleration(checked, key=gpu.toleration_key, operator="Exists", effect=gpu.toleration_effect)
        # Step 5: every candidate becomes a version, passed or failed.
        registered = register(
            candidate=tuned.outputs["finetuned_model"],
            evidence=checked.outputs["evidence"],
            report=checked.outputs["report"],
            model_name=model_name,
            parent_version=version,
            recipe=recipe,
            task=task,
            tracking_uri=tracking_uri,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        settings.apply(registered, "register")
        # Step 6: only a version whose gate passed becomes the challenger.
        with dsl.If(checked.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 - KFP condition
            alias = set_challenger(model_name=model_name, version=registered.output, tracking_uri=tracking_uri)
            settings.apply(alias, "set-challenger")
        return registered.output

    return prune_and_register


def compile_pipelines(
    output_dir: str, gpu: GpuPlacement | None = None, cluster: ClusterSettings | None = None
) -> list[str]:
    """Write ``prune_and_register.yaml`` and ``prune_and_register_gpu.yaml`` (KFP IR) into ``output_dir``.

    >>> import tempfile, yaml
    >>> written = compile_pipelines(tempfile.mkdtemp())
    >>> [path.rsplit("/", 1)[1] for path in written]
    ['prune_and_register.yaml', 'prune_and_register_gpu.yaml']
    >>> with open(written[1]) as file:  # the pipeline, then its Kubernetes platform spec
    ...     next(yaml.safe_load_all(file))["pipelineInfo"]["name"]
    'prune-and-register-gpu'
    """
    from pathlib import Path

    from kfp import compiler

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, placement in (("prune_and_register.yaml", None), ("prune_and_register_gpu.yaml", gpu or GpuPlacement())):
        compiler.Compiler().compile(build_pipeline(placement, cluster), str(out / name))
        written.append(str(out / name))
    return written
