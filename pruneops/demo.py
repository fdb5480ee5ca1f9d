"""Bootstrap the embedded demo: train the digits baseline and register it as champion.

>>> import os, tempfile
>>> os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db"
>>> info = init_demo("digits-doc")                  # doctest: +SKIP
>>> info.aliases                                     # doctest: +SKIP
('champion',)
"""

from __future__ import annotations

import tempfile

from pruneops.modelio import save_model
from pruneops.registry import CHAMPION, Registry, VersionInfo
from pruneops.tasks import Task, load_task

DEFAULT_TASK = "pruneops.tasks.digits:task"

#: The demo's recipe: the same as recipes/channels-50-cpu.yaml (a test keeps them equal),
#: inline so an installed package needs no repository checkout.
DEMO_RECIPE = {
    "prune": {"method": "magnitude", "pattern": "channels", "sparsity": 0.5, "exclude": ["classifier.3"]},
    "finetune": {
        "epochs": 5,
        "lr": 1.0e-3,
        "distill": {"temperature": 2.0, "alpha": 0.5},
        "early_stopping": {"patience": 2},
    },
    "validate": {"target": "cpu", "runtimes": ["onnxruntime"], "batch_sizes": [1, 32]},
    "gates": {"max_accuracy_drop": 0.02, "min_speedup": 1.3},
    # Live analysis in the demo's closed loop: two passing minutes-long windows are enough.
    # failure_limit: the first analyses run while the local stack starts, and their p99s swing.
    "rollout": {"successes": 2, "min_samples": 50, "max_latency_ratio": 1.5, "failure_limit": 6},
}


def register_baseline(
    registry: Registry, name: str, task: Task, model: object, task_path: str, why: str = "baseline"
) -> VersionInfo:
    """Register a dense model as a new version with its metrics and reference sample, and make it champion.

    >>> # registry, task = Registry(), load_task(DEFAULT_TASK)
    >>> # register_baseline(registry, "digits", task, task.train_baseline(), DEFAULT_TASK)
    """
    from torch import nn

    assert isinstance(model, nn.Module)
    metrics = task.evaluate(model)
    reference, columns = task.reference_table(model)
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, tmp, task.arch, probe=task.probe(model))
        info = registry.register(
            name,
            tmp,
            tags={
                "source": "baseline",
                "task": task_path,
                "method": "dense",
                "pattern": "dense",
                "sparsity": 0.0,
                "accuracy": f"{metrics[task.primary_metric]:.6f}",
                "gate": "passed",
            },
            metrics=metrics,
            reference=reference,
            feature_names=columns,
            report={"task": task_path, "metrics": metrics, "kind": "baseline"},
        )
    registry.set_alias(name, CHAMPION, info.version, why)
    return registry.version(name, info.version)


def init_demo(name: str = "digits", task_path: str = DEFAULT_TASK, seed: int = 0, force: bool = False) -> VersionInfo:
    """Train the task's baseline and register it as ``champion``; reuse an existing champion unless ``force``."""
    registry = Registry()
    if not force:
        existing = _existing_champion(registry, name)
        if existing is not None:
            return existing
    task = load_task(task_path)
    return register_baseline(registry, name, task, task.train_baseline(seed), task_path, why="init-demo")


def _existing_champion(registry: Registry, name: str) -> VersionInfo | None:
    from pruneops.errors import NotFoundError

    try:
        return registry.alias(name, CHAMPION)
    except NotFoundError:
        return None
