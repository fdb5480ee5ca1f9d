"""Bring a team's trained model into the registry as a pipeline source: ``pruneops register``.

A model comes in as it is, with no retraining: a torch module object plus the factory that
builds it (``arch``), a saved pruneops folder, or an MLflow ``pytorch`` model saved as pt2
(a folder, or a URI such as ``models:/team-model/3``; see :mod:`pruneops.sources`).

How to score it comes from a task import path, or from a data file and a metric
(:mod:`pruneops.tasks.datafile`). The file is logged to MLflow (run ``<name>-data`` in the
pruneops experiment) and the version's ``pruneops.task`` tag names it with its sha256, so
every later step and the trigger find it. For ``cosine`` the dense model's own outputs are
recorded as the labels.

The version is registered like every pruneops version (proven, with digests and an
``MLmodel``), tagged ``source=baseline``, with its metrics and drift reference. It becomes
``champion`` only when the model has none yet; otherwise the alias stays where it is.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pruneops.errors import TaskError
from pruneops.modelio import ArchSpec, save_model
from pruneops.registry import CHAMPION, Registry, VersionInfo
from pruneops.tasks import Task, load_task
from pruneops.tasks.datafile import DataSpec, parse_spec, read_data_file

DATA_DIR = "data"


def register_model(
    name: str,
    model: nn.Module | str | Path,
    *,
    arch: ArchSpec | None = None,
    task: str | None = None,
    data: str | Path | None = None,
    metric: str | None = None,
    registry: Registry | None = None,
) -> VersionInfo:
    """Register a trained model (a module with its ``arch``, or a saved pruneops folder) as a source version.

    Give ``task`` (an import path or ``data:`` spec) or ``data`` and ``metric``. Errors
    (unknown metric, unreadable data, a model that does not run on the data, an untrusted
    factory) are raised before anything is written.
    >>> import tempfile, torch
    >>> registry = Registry("sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    >>> data = Path(tempfile.mkdtemp()) / "cancer.npz"
    >>> np.savez(data, inputs=np.random.default_rng(0).normal(size=(40, 30)), labels=np.arange(40) % 2)
    >>> arch = ArchSpec("torch.nn:Linear", {"in_features": 30, "out_features": 2})
    >>> model = torch.nn.Linear(30, 2)
    >>> info = register_model("cancer", model, arch=arch, data=data, metric="accuracy", registry=registry)
    >>> info.version, info.aliases, info.tag("source"), info.tag("task")
    ('1', ('champion',), 'baseline', 'data:...cancer.npz#metric=accuracy&sha256=...')
    >>> register_model("cancer", torch.nn.Linear(30, 2), data=data, metric="accuracy", registry=registry)
    Traceback (most recent call last):
    ...
    pruneops.errors.TaskError: a model object needs arch=ArchSpec('pkg.module:Factory', {...}): ...
    """
    registry = registry or Registry()
    if (task is None) == (data is None):
        raise TaskError("give either a task (import path or data: spec) or a data file with a metric")
    with tempfile.TemporaryDirectory() as tmp:  # a downloaded source lives until it is saved
        module, spec = _as_module(model, arch, registry, Path(tmp))
        task_path = task if data is None else _log_data(registry, name, Path(data), metric or "", module)
        if task_path is None:  # unreachable after the check above; a clear error, not an assert that -O removes
            raise TaskError("give either a task (import path or data: spec) or a data file with a metric")
        loaded = load_task(task_path, registry.tracking_uri)  # the data file was logged to this registry
        _check_runs(module, loaded)
        return register_source(registry, name, module, spec, loaded, task_path)


def _as_module(
    model: nn.Module | str | Path, arch: ArchSpec | None, registry: Registry, tmp: Path
) -> tuple[nn.Module, ArchSpec]:
    """A module and its spec from an object, a folder, or an MLflow model URI (``models:/NAME/3``, ``runs:/...``)."""
    from pruneops.sources import import_model

    if isinstance(model, nn.Module):
        if arch is None:
            raise TaskError(
                "a model object needs arch=ArchSpec('pkg.module:Factory', {...}): the factory and "
                "arguments that build it, so it can be saved without pickle"
            )
        return model.eval(), arch
    text = str(model)
    folder = registry.download_uri(text, tmp) if ":/" in text and not Path(text).exists() else Path(text)
    return import_model(folder)


def _log_data(registry: Registry, name: str, path: Path, metric: str, model: nn.Module) -> str:
    """Log the data file to MLflow and return the ``data:`` spec naming it (with its sha256)."""
    from pruneops.integrity import sha256_file

    parse_spec(f"data:{path.name}#metric={metric}")  # the metric and suffix, before any work
    inputs, labels = read_data_file(path)
    with tempfile.TemporaryDirectory() as tmp:
        if labels is None:
            if metric != "cosine":
                raise TaskError(f"{path.name} has no labels; metric {metric} needs them (cosine does not)")
            path = _with_dense_outputs(path, Path(tmp) / f"{path.stem}.npz", inputs, model)
        run_id = registry.log_files(f"{name}-data", {DATA_DIR: path})
        return str(DataSpec(f"runs:/{run_id}/{DATA_DIR}/{path.name}", metric, sha256_file(path)))


def _with_dense_outputs(source: Path, target: Path, inputs: np.ndarray, model: nn.Module) -> Path:
    """Write ``inputs`` with the dense model's outputs as ``labels`` (the cosine reference)."""
    with torch.no_grad():
        outputs = torch.cat(
            [model(torch.from_numpy(chunk)) for chunk in np.array_split(inputs, max(1, len(inputs) // 256))]
        )
    np.savez(target, inputs=inputs, labels=outputs.float().numpy())
    return target


def _check_runs(model: nn.Module, task: Task) -> None:
    """The model must take the task's inputs: a mismatch is one line, not a shape error three steps later."""
    example = task.example_input(2)
    try:
        with torch.no_grad():
            model(example)
    except Exception as err:  # noqa: BLE001 - any failure here means model and data do not fit
        raise TaskError(
            f"the model does not run on the task's inputs (shape {list(example.shape)}, {example.dtype}): "
            f"{str(err).splitlines()[0]}"
        ) from None


def register_source(
    registry: Registry,
    name: str,
    model: nn.Module,
    spec: ArchSpec,
    task: Task,
    task_path: str,
    champion: bool | None = None,
    why: str = "first version, registered with pruneops register",
) -> VersionInfo:
    """Register a dense model as a source version with its metrics, probe and drift reference.

    ``champion``: True moves the alias to it, None gives it only when the model has none.

    >>> from pruneops.modelio import build_model
    >>> from pruneops.tasks.digits import task
    >>> registry = Registry("sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    >>> task_path = "pruneops.tasks.digits:task"
    >>> first = register_source(registry, "digits", build_model(task.arch), task.arch, task, task_path)
    >>> second = register_source(registry, "digits", build_model(task.arch), task.arch, task, task_path)
    >>> first.aliases, second.aliases  # the champion stays where it is
    (('champion',), ())
    >>> registry.versions("digits")[-1].tag("source")
    'baseline'
    """
    metrics = task.evaluate(model)
    reference, columns = task.reference_table(model)
    if champion is None:
        champion = not (registry.has_model(name) and CHAMPION in registry.aliases(name))
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, tmp, spec, probe=task.probe(model))
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
    if champion:
        registry.set_alias(name, CHAMPION, info.version, why)
    return registry.version(name, info.version)
