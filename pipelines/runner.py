"""Run the pipeline locally (``kfp.local``) or submit it to a Kubeflow Pipelines API server.

Local runs execute every component as a subprocess of the current Python
(``SubprocessRunner(use_venv=False)``), with pipeline artifacts under
``$PRUNEOPS_HOME/kfp`` and KFP's own output (executor inputs, each step's logs) in a file
under ``$PRUNEOPS_HOME/kfp/logs`` (:mod:`pruneops.pipelines.kfplog`); ``on_step`` hears each step
start and end. Inputs are checked before anything runs: the model version must
exist, the recipe must validate, the task must import. The task is the one given, else the
one recorded on the source version (its ``pruneops.task`` tag); a version with neither is
refused with one line, before any step. A failing step stops the run with
the step's name and reason, and leaves the registry as it was (registration is the last
write).
"""

import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pruneops import settings
from pruneops.errors import PruneopsError
from pruneops.pipelines.kfplog import StepEvent, kfp_output_to
from pruneops.recipe import Recipe
from pruneops.tasks import load_task


class PipelineFailed(PruneopsError):
    """A pipeline run that failed; the message names the step and its reason."""


@dataclass(frozen=True)
class RunResult:
    """The version the run registered (gate passed or failed), and where KFP's logs are."""

    model: str
    parent_version: str
    version: str
    log_file: Path | None = None


def _arguments(model: str, version: str, recipe: Recipe, task: str, tracking_uri: str) -> dict[str, str]:
    return {
        "model_name": model,
        "version": version,
        "recipe": json.dumps(recipe.to_dict()),
        "task": task,
        "target": recipe.validate_.target,
        "tracking_uri": tracking_uri,
    }


def check_inputs(
    model: str,
    version: str,
    task: str | None = None,
    tracking_uri: str | None = None,
    recipe: Recipe | None = None,
    local: bool = False,
) -> tuple[str, str]:
    """Fail fast, before any step runs, with the one-line errors the steps would give later.

    Checks, in order: the version exists; its format can take the recipe's pattern
    (:func:`pruneops.sources.check_version`, from the file list and ``MLmodel`` only), and
    the library a transformers source needs is installed; the
    task loads; the recipe's pattern fits the model's layers (N:M divisibility, attention
    for heads, a block list for blocks: :func:`pruneops.pruning.check_fits` on the
    downloaded model); and, for a ``local`` run, the target's runtimes exist on this machine.
    Returns the version number and the task: ``task`` when given, else the version's
    ``pruneops.task`` tag.

    >>> from pruneops.modelio import build_model
    >>> from pruneops.onboard import register_source
    >>> from pruneops.recipe import parse_recipe
    >>> from pruneops.registry import Registry
    >>> from pruneops.tasks.digits import task
    >>> uri, task_path = "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db", "pruneops.tasks.digits:task"
    >>> _ = register_source(Registry(uri), "digits", build_model(task.arch), task.arch, task, task_path)
    >>> check_inputs("digits", "champion", tracking_uri=uri)
    ('1', 'pruneops.tasks.digits:task')
    >>> check_inputs("digits", "1", tracking_uri=uri, recipe=parse_recipe({"prune": {"pattern": "2:4"}}))
    Traceback (most recent call last):
    ...
    pruneops.errors.PruneopsError: digits v1: layer 'features.0' cannot take pattern 2:4: ... not divisible by 4; ...
    """
    from pruneops.registry import Registry
    from pruneops.sources import TRANSFORMERS, check_version

    registry = Registry(tracking_uri)
    info = registry.resolve(model, version)
    found = check_version(registry, model, info.version, recipe.prune.pattern if recipe else None)
    if found == TRANSFORMERS and importlib.util.find_spec("transformers") is None:
        raise PruneopsError(
            f"{model} v{info.version} is an MLflow transformers model, and transformers is not installed "
            "here (pip install 'pruneops[transformers]')"
        )
    chosen = task or info.tag("task")
    if not chosen:
        raise PruneopsError(
            f"{model} v{info.version} has no pruneops.task tag, so nothing says how to score it; "
            "pass --task package.module:task"
        )
    load_task(chosen)
    if recipe is not None:
        _check_fits(registry, model, info.version, recipe)
        if local:
            _check_runtimes(recipe)
    return info.version, chosen


def _check_fits(registry: Any, model: str, version: str, recipe: Recipe) -> None:
    from pruneops.pruning import check_fits, glob_filter
    from pruneops.pruning.config import from_spec
    from pruneops.sources import import_model

    with tempfile.TemporaryDirectory() as tmp:
        module, _spec = import_model(registry.download_source(model, version, tmp))
        try:
            check_fits(module, from_spec(recipe.prune), glob_filter(recipe.prune.include, recipe.prune.exclude))
        except PruneopsError as err:
            raise PruneopsError(f"{model} v{version}: {err}") from None


def _check_runtimes(recipe: Recipe) -> None:
    """A local run validates on this machine: the target's runtimes must be here."""
    import torch

    needs_gpu = recipe.validate_.target == "cuda" or "torch-sparse" in recipe.validate_.runtimes
    if needs_gpu and not torch.cuda.is_available():
        raise PruneopsError(
            "the recipe validates on target cuda, and this machine has no CUDA GPU; "
            "submit it with --kfp-host to a cluster with GPU nodes, or use target cpu"
        )
    if "onnxruntime" in recipe.validate_.runtimes and importlib.util.find_spec("onnxruntime") is None:
        raise PruneopsError(
            "the recipe validates on onnxruntime, which is not installed here (pip install onnxruntime)"
        )


def log_path(model: str, version: str) -> Path:
    """Where a local run of ``model`` v``version`` writes KFP's output: one new file per run.

    >>> log_path("digits", "1").name.startswith("digits-v1-")
    True
    """
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 1_000_000:06d}"
    return settings.state_dir() / "kfp" / "logs" / f"{model}-v{version}-{stamp}.log"


def run_local(
    model: str,
    version: str,
    recipe: Recipe,
    task: str | None = None,
    on_step: Callable[[StepEvent], None] | None = None,
    log_file: Path | None = None,
) -> RunResult:
    """Run the pipeline on this machine and return the registered version (``task``: default the version's tag).

    KFP's output goes to ``log_file`` (default :func:`log_path`), not to the terminal; a
    failure's message names it.

    Every step runs as its own process, as on a cluster (about a minute on two cores):

    >>> from pruneops.modelio import build_model
    >>> from pruneops.onboard import register_source
    >>> from pruneops.recipe import parse_recipe
    >>> from pruneops.registry import Registry
    >>> from pruneops.tasks.digits import task
    >>> os.environ["PRUNEOPS_HOME"] = tempfile.mkdtemp()  # the registry and KFP's files live here
    >>> task_path = "pruneops.tasks.digits:task"
    >>> _ = register_source(Registry(), "digits", build_model(task.arch), task.arch, task, task_path)
    >>> recipe = parse_recipe({
    ...     "prune": {"sparsity": 0.5},
    ...     "validate": {"runtimes": ["onnxruntime"], "batch_sizes": [8], "iterations": 5, "warmup": 1},
    ...     "gates": {"max_accuracy_drop": 1.0},
    ... })
    >>> result = run_local("digits", "1", recipe)
    >>> result.version, sorted(Registry().aliases("digits").items())
    ('2', [('challenger', '2'), ('champion', '1')])
    >>> del os.environ["PRUNEOPS_HOME"]
    """
    from kfp import local

    from pruneops.pipelines.cluster import LOCAL
    from pruneops.pipelines.prune_and_register import GpuPlacement, build_pipeline
    from pruneops.steps import ERROR_FILE_ENV

    number, task = check_inputs(model, version, task, recipe=recipe, local=True)
    tracking_uri = settings.tracking_uri()
    root = settings.state_dir() / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    pipeline = build_pipeline(GpuPlacement() if recipe.validate_.target == "cuda" else None, LOCAL)
    log_file = log_file or log_path(model, number)
    with tempfile.TemporaryDirectory() as tmp:
        error_file = Path(tmp) / "error.json"
        previous = os.environ.get(ERROR_FILE_ENV)
        os.environ[ERROR_FILE_ENV] = str(error_file)
        try:
            with kfp_output_to(log_file, on_step):
                outputs = pipeline(**_arguments(model, number, recipe, task, tracking_uri))
        except Exception as err:  # noqa: BLE001 - kfp.local raises RuntimeError and others for a failed task
            if error_file.is_file():
                failure = json.loads(error_file.read_text())
                raise PipelineFailed(
                    f"step {failure['step']} failed: {failure['error']} (KFP's logs: {log_file})"
                ) from None
            raise PipelineFailed(f"pipeline failed: {str(err).splitlines()[0]} (KFP's logs: {log_file})") from None
        finally:
            if previous is None:
                os.environ.pop(ERROR_FILE_ENV, None)
            else:
                os.environ[ERROR_FILE_ENV] = previous
    return RunResult(model, number, str(outputs.output), log_file)


def submit(
    host: str,
    model: str,
    version: str,
    recipe: Recipe,
    task: str | None,
    tracking_uri: str,
    experiment: str = "pruneops",
    namespace: str | None = None,
    token_file: str | None = None,
) -> str:
    """Submit the same pipeline to a KFP API server; returns the run id.

    ``tracking_uri`` must be reachable from the cluster (the local SQLite default is not).
    Without ``task``, the version's ``pruneops.task`` tag is read from that server. On a
    multi-user Kubeflow, ``namespace`` is the profile's namespace the run and its experiment
    belong to, and ``token_file`` a service-account token (audience ``pipelines.kubeflow.org``)
    read on every request, so a rotated token keeps working; without it the KFP SDK reads
    ``$KF_PIPELINES_SA_TOKEN_PATH`` or ``/var/run/secrets/kubeflow/pipelines/token`` when present.

    What cannot work on a cluster is refused before any request:

    >>> from pruneops.recipe import parse_recipe
    >>> recipe = parse_recipe({"prune": {"sparsity": 0.5}})
    >>> submit("http://kfp:8888", "digits", "1", recipe, None, "sqlite:///mlflow.db")
    Traceback (most recent call last):
    ...
    pruneops.errors.PruneopsError: --kfp-host needs a tracking server the cluster can reach; ...
    >>> submit("http://kfp:8888", "digits", "1", recipe, None, "http://mlflow:5000", token_file="/no/token")
    Traceback (most recent call last):
    ...
    pruneops.errors.PruneopsError: KFP token file not found: /no/token
    """
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    from pruneops.pipelines.prune_and_register import GpuPlacement, build_pipeline

    if not tracking_uri or tracking_uri.startswith("sqlite:"):
        raise PruneopsError("--kfp-host needs a tracking server the cluster can reach; pass --tracking-uri http://...")
    if token_file is not None and not Path(token_file).is_file():
        raise PruneopsError(f"KFP token file not found: {token_file}")
    _number, task = check_inputs(model, version, task, tracking_uri, recipe)
    pipeline = build_pipeline(GpuPlacement() if recipe.validate_.target == "cuda" else None)
    credentials = ServiceAccountTokenVolumeCredentials(token_file) if token_file else None
    client = kfp.Client(host=host, namespace=namespace or "kubeflow", credentials=credentials)
    run = client.create_run_from_pipeline_func(
        pipeline,
        arguments=_arguments(model, version, recipe, task, tracking_uri),
        experiment_name=experiment,
        namespace=namespace,
    )
    return str(run.run_id)
