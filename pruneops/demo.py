"""Bootstrap the embedded demo: train the digits baseline and register it as champion."""

from __future__ import annotations

from pruneops.onboard import register_source
from pruneops.registry import CHAMPION, Registry, VersionInfo
from pruneops.tasks import load_task

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
    # failure_limit: the first analyses' 1-minute windows hold the local stack's start-up; one
    # window's worth of them (12 at 5 s) may fail before the challenger is rejected.
    # min_latency_excess_ms: the digits model's p99 is a few ms, where a p99 of 100-300 requests
    # swings by 1.5x from noise alone; a real regression (the drill's: +90 ms) is far beyond 5 ms.
    "rollout": {
        "successes": 2,
        "min_samples": 50,
        "max_latency_ratio": 1.5,
        "min_latency_excess_ms": 5.0,
        "failure_limit": 12,
    },
}


def init_demo(name: str = "digits", task_path: str = DEFAULT_TASK, seed: int = 0, force: bool = False) -> VersionInfo:
    """Train the task's baseline and register it as ``champion``; reuse an existing champion unless ``force``.

    Training the digits baseline takes about 15 s on two cores; a model that has a champion
    already is returned as it is:

    >>> import os, tempfile
    >>> from pruneops.modelio import build_model
    >>> from pruneops.tasks.digits import task
    >>> os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db"
    >>> _ = register_source(Registry(), "digits", build_model(task.arch), task.arch, task, DEFAULT_TASK)
    >>> info = init_demo("digits")  # reused: nothing trained
    >>> info.version, info.aliases
    ('1', ('champion',))
    >>> del os.environ["MLFLOW_TRACKING_URI"]
    """
    registry = Registry()
    if not force:
        existing = _existing_champion(registry, name)
        if existing is not None:
            return existing
    task = load_task(task_path)
    model = task.train_baseline(seed)
    return register_source(registry, name, model, task.arch, task, task_path, champion=True, why="init-demo")


def _existing_champion(registry: Registry, name: str) -> VersionInfo | None:
    from pruneops.errors import NotFoundError

    try:
        return registry.alias(name, CHAMPION)
    except NotFoundError:
        return None
