"""How each pipeline step runs on a cluster: caching, resources, retries, MLflow credentials.

(No ``from __future__ import annotations`` here: this module is imported by the pipeline
definition, which KFP reads at run time.)

- **Caching** is off for the steps that write to MLflow (``register``, ``set-challenger``):
  a cached ``set-challenger`` would report success without setting the alias, and a cached
  ``register`` would hand back a version number from an earlier run. The other steps are pure
  functions of their inputs, and KFP's cache may reuse them.
- **Resources**: CPU and memory requests and limits for every step (:data:`DEFAULT_RESOURCES`),
  overridable per step at compile time (``pruneops compile --resources resources.yaml``).
  ``validate`` gets requests equal to its limits, so the pod is in the Guaranteed QoS class and
  its latency measurements do not share CPUs (with the kubelet's static CPU manager).
- **Retries** with exponential backoff for the steps that talk to MLflow (``baseline``,
  ``register``, ``set-challenger``); all three are idempotent (registration by run key).
- **MLflow credentials** from a Kubernetes secret (default ``mlflow-credentials``), each key
  optional, as environment variables of the steps that talk to MLflow: the tracking URI when
  the run gives none, MLflow's basic auth or token, and the artifact store's S3 keys.

>>> settings = ClusterSettings()
>>> settings.resources_for("validate").cpu_request == settings.resources_for("validate").cpu_limit
True
>>> sorted(MLFLOW_STEPS)
['baseline', 'register', 'set-challenger']

A local run (``kfp.local``) uses :data:`LOCAL`: no retries (a failure there is a bug to see at
once, not an outage to wait out) and no secret; KFP's local runner ignores resources.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from kfp import dsl, kubernetes

from pruneops.errors import PruneopsError

#: Steps that read or write the registry: retried, and given the MLflow secret.
MLFLOW_STEPS = frozenset({"baseline", "register", "set-challenger"})
#: Steps with side effects in MLflow: never cached.
UNCACHED_STEPS = frozenset({"register", "set-challenger"})
STEPS = ("baseline", "prune", "finetune", "validate", "register", "set-challenger")


@dataclass(frozen=True)
class StepResources:
    """Kubernetes CPU and memory requests and limits of one step's pod."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


DEFAULT_RESOURCES: Mapping[str, StepResources] = {
    "baseline": StepResources("1", "2", "2Gi", "4Gi"),
    "prune": StepResources("2", "4", "4Gi", "8Gi"),
    "finetune": StepResources("2", "4", "4Gi", "8Gi"),
    "validate": StepResources("4", "4", "8Gi", "8Gi"),  # Guaranteed QoS: steady latency figures
    "register": StepResources("500m", "1", "1Gi", "2Gi"),
    "set-challenger": StepResources("100m", "500m", "256Mi", "512Mi"),
}

DEFAULT_SECRET = "mlflow-credentials"
#: Environment variables the MLflow secret may hold (each key is optional).
MLFLOW_SECRET_KEYS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


@dataclass(frozen=True)
class Retry:
    """KFP's retry policy: ``attempts`` more tries, waiting ``backoff`` x ``factor``^n up to ``max_backoff``."""

    attempts: int = 3
    backoff: str = "30s"
    factor: float = 2.0
    max_backoff: str = "10m"


@dataclass(frozen=True)
class ClusterSettings:
    """Compile-time settings of every step; the defaults fit a small model on a shared cluster."""

    resources: Mapping[str, StepResources] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    retry: Retry | None = field(default_factory=Retry)
    mlflow_secret: str | None = DEFAULT_SECRET

    def resources_for(self, step: str) -> StepResources:
        return self.resources[step]

    def apply(self, task: dsl.PipelineTask, step: str) -> dsl.PipelineTask:
        """Set ``step``'s caching, resources, retries and MLflow secret on ``task``."""
        if step in UNCACHED_STEPS:
            task.set_caching_options(False)
        res = self.resources_for(step)
        task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
        task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
        if step in MLFLOW_STEPS and self.retry is not None:
            retry = self.retry
            task.set_retry(
                retry.attempts,
                backoff_duration=retry.backoff,
                backoff_factor=retry.factor,
                backoff_max_duration=retry.max_backoff,
            )
        if step in MLFLOW_STEPS and self.mlflow_secret:
            keys = {key: key for key in MLFLOW_SECRET_KEYS}
            kubernetes.use_secret_as_env(task, secret_name=self.mlflow_secret, secret_key_to_env=keys, optional=True)
        return task

    @classmethod
    def load(cls, path: str | Path | None = None, mlflow_secret: str | None = DEFAULT_SECRET) -> "ClusterSettings":
        """Defaults, with the per-step resources of a YAML file over them.

        The file maps a step to any of ``cpu_request``, ``cpu_limit``, ``memory_request``,
        ``memory_limit``: ``{finetune: {memory_limit: 16Gi}}``.
        """
        import yaml

        resources = dict(DEFAULT_RESOURCES)
        if path is not None:
            data = yaml.safe_load(Path(path).read_text()) or {}
            known = {f.name for f in fields(StepResources)}
            for step, override in data.items():
                if step not in resources or not isinstance(override, dict) or set(override) - known:
                    steps, allowed = ", ".join(STEPS), ", ".join(sorted(known))
                    raise PruneopsError(f"{path}: {step!r} must be one of {steps}, mapped to any of {allowed}")
                resources[step] = replace(resources[step], **{k: str(v) for k, v in override.items()})
        return cls(resources=resources, mlflow_secret=mlflow_secret or None)


#: What ``pruneops run`` uses on this machine.
LOCAL = ClusterSettings(retry=None, mlflow_secret=None)
