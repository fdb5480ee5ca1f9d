"""The pipeline's steps as plain functions over folders, so they are tested without KFP
(``tests/pruneops/test_steps.py``).

Each KFP component in ``components/<step>/`` is a thin wrapper that calls one of these with
its artifact paths. A model folder is what :mod:`pruneops.modelio` writes; a pruned model
folder may also hold ``masks.safetensors`` (unstructured/N:M masks by layer name), which
the finetune step puts back so fine-tuning keeps every pruned weight at zero.

>>> sorted(STEP_NAMES)
['baseline', 'finetune', 'prune', 'register', 'set_challenger', 'validate']
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pruneops.evidence import Evidence, GateEvidence, OnnxEvidence, PruneEvidence, ValidationEvidence
from pruneops.mlmodel import ONNX_FILE
from pruneops.modelio import ARCH_FILE, load_model, save_model, saved_spec
from pruneops.recipe import Recipe, parse_recipe
from pruneops.tasks import Task, load_task

STEP_NAMES = ("baseline", "prune", "finetune", "validate", "register", "set_challenger")
MASKS_FILE = "masks.safetensors"
PRUNE_REPORT = "prune_report.json"
METRICS_FILE = "metrics.json"


ERROR_FILE_ENV = "PRUNEOPS_STEP_ERROR_FILE"


@contextlib.contextmanager
def report_failure(step: str) -> Iterator[None]:
    """Record a failing step and its reason where the local runner can read them, then re-raise.

    The runner sets ``PRUNEOPS_STEP_ERROR_FILE``; on a cluster the reason is in the step's log.

    >>> os.environ[ERROR_FILE_ENV] = str(Path(tempfile.mkdtemp()) / "error.json")
    >>> with report_failure("prune"):
    ...     raise ValueError("no layer to prune")
    Traceback (most recent call last):
    ...
    ValueError: no layer to prune
    >>> json.loads(Path(os.environ.pop(ERROR_FILE_ENV)).read_text())
    {'step': 'prune', 'error': 'ValueError: no layer to prune'}
    """
    try:
        yield
    except Exception as err:
        target = os.environ.get(ERROR_FILE_ENV)
        if target:
            Path(target).write_text(json.dumps({"step": step, "error": f"{type(err).__name__}: {err}"}))
        raise


def with_target(recipe: Recipe, target: str) -> Recipe:
    """The recipe with ``validate.target`` replaced (an empty ``target`` keeps the recipe's).

    >>> recipe = parse_recipe({"prune": {"sparsity": 0.5}})
    >>> recipe.validate_.target, with_target(recipe, "cuda").validate_.target, with_target(recipe, "").validate_.target
    ('cpu', 'cuda', 'cpu')
    """
    if not target or target == recipe.validate_.target:
        return recipe
    data = recipe.to_dict()
    data["validate"]["target"] = target
    return parse_recipe(data)


def use_tracking_uri(uri: str) -> None:
    """Point MLflow at ``uri`` for this step's process (empty: keep the environment's default).

    Also applies pruneops's MLflow process defaults (:func:`pruneops.settings.use_process_defaults`).

    >>> use_tracking_uri("http://mlflow:5000")
    >>> os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    ('http://mlflow:5000', '2')
    >>> del os.environ["MLFLOW_TRACKING_URI"]
    """
    from pruneops.settings import use_process_defaults

    use_process_defaults()
    if uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri


def recipe_from_json(text: str) -> Recipe:
    """The recipe a component receives as a JSON string, validated on entry.

    >>> recipe_from_json('{"prune": {"method": "wanda", "pattern": "2:4"}}').prune.pattern
    '2:4'
    >>> recipe_from_json('{"prune": {"sparsity": 2}}')
    Traceback (most recent call last):
    ...
    pruneops.errors.RecipeError: invalid recipe: prune.sparsity: must be in (0, 1) exclusive, got 2.0; ...
    """
    return parse_recipe(json.loads(text))


def baseline(model_name: str, version: str, task_path: str, out_dir: str | Path) -> dict[str, float]:
    """Download the source version into ``out_dir`` (as a pruneops model) and measure its metrics there.

    Its files are checked against the digests recorded at registration when it has them;
    a source model a team registered outside pruneops has none. A team's MLflow pytorch
    (pt2) model is imported (:mod:`pruneops.sources`) and saved as a pruneops model with a
    probe of the task's inputs.

    >>> from pruneops.modelio import build_model
    >>> from pruneops.onboard import register_model
    >>> from pruneops.tasks.digits import task
    >>> os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db"
    >>> source = register_model("digits", build_model(task.arch), arch=task.arch, task="pruneops.tasks.digits:task")
    >>> out = Path(tempfile.mkdtemp()) / "dense"
    >>> metrics = baseline("digits", source.version, "pruneops.tasks.digits:task", out)
    >>> json.loads((out / METRICS_FILE).read_text()) == metrics, load_model(out).training
    (True, False)
    >>> del os.environ["MLFLOW_TRACKING_URI"]
    """
    from pruneops.registry import Registry
    from pruneops.sources import import_model

    out_dir = Path(out_dir)
    task = load_task(task_path)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Registry().download_source(model_name, version, tmp)
        if (folder / ARCH_FILE).is_file():
            shutil.copytree(folder, out_dir, dirs_exist_ok=True)
        else:
            model, spec = import_model(folder)
            save_model(model, out_dir, spec, probe=task.probe(model))
    metrics = task.evaluate(load_model(out_dir))
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return metrics


def prune(dense_dir: str | Path, recipe: Recipe, task_path: str, out_dir: str | Path) -> dict[str, Any]:
    """Prune the dense model as the recipe says; save it with its masks and a report.

    One-shot: prune only. Iterative: every step, with fine-tuning between steps; the
    fine-tuning after the last step is the finetune step's.

    >>> from pruneops.modelio import build_model
    >>> from pruneops.tasks.digits import task
    >>> tmp, model = Path(tempfile.mkdtemp()), build_model(task.arch)
    >>> dense = save_model(model, tmp / "dense", task.arch, probe=task.probe(model))
    >>> recipe = parse_recipe({"prune": {"sparsity": 0.5}})
    >>> report = prune(dense, recipe, "pruneops.tasks.digits:task", tmp / "pruned")
    >>> report["sparsity"], sorted(p.name for p in (tmp / "pruned").iterdir())
    (0.5, ['arch.json', 'masks.safetensors', 'model.safetensors', 'probe.safetensors', 'prune_report.json'])
    """
    from pruneops.pruning import make_permanent
    from pruneops.schedule import prune_and_recover

    task = load_task(task_path)
    dense = load_model(dense_dir)
    model = load_model(dense_dir)
    result = prune_and_recover(
        model, task, recipe.prune, recipe.finetune, teacher=dense, progress=False, final_finetune=False
    )
    out_dir = Path(out_dir)
    if result.report.masks:
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.to(torch.uint8).contiguous() for k, v in result.report.masks.items()}, str(out_dir / MASKS_FILE)
        )
    make_permanent(model)
    save_model(model, out_dir, saved_spec(dense_dir), probe=task.probe(model))
    report = result.report.to_dict() | {"steps": result.steps}
    (out_dir / PRUNE_REPORT).write_text(json.dumps(report, indent=2, default=float))
    return report


def finetune(
    pruned_dir: str | Path, dense_dir: str | Path, recipe: Recipe, task_path: str, out_dir: str | Path
) -> dict[str, Any]:
    """Fine-tune the pruned model with its masks held (and distillation when the recipe asks).

    >>> from pruneops.modelio import build_model
    >>> from pruneops.tasks.digits import task
    >>> tmp, model, task_path = Path(tempfile.mkdtemp()), build_model(task.arch), "pruneops.tasks.digits:task"
    >>> dense = save_model(model, tmp / "dense", task.arch, probe=task.probe(model))
    >>> recipe = parse_recipe({"prune": {"sparsity": 0.5}, "finetune": {"epochs": 1}})
    >>> report = prune(dense, recipe, task_path, tmp / "pruned")
    >>> finetune(tmp / "pruned", dense, recipe, task_path, tmp / "tuned")["epochs"]
    1
    >>> weight = load_model(tmp / "tuned").get_submodule(report["layers"][0]["name"]).weight
    >>> round((weight == 0).float().mean().item(), 1)  # the pruned weights stayed zero
    0.5
    """
    from pruneops.finetune import finetune as run_finetune
    from pruneops.pruning import apply_mask, make_permanent

    task = load_task(task_path)
    model = load_model(pruned_dir)
    masks_path = Path(pruned_dir) / MASKS_FILE
    if masks_path.is_file():
        from safetensors.torch import load_file

        for name, mask in load_file(str(masks_path)).items():
            apply_mask(model.get_submodule(name), mask.bool())
    teacher = load_model(dense_dir) if recipe.finetune.distill is not None else None
    result = run_finetune(model, task, recipe.finetune, teacher=teacher, progress=False)
    make_permanent(model)
    out_dir = Path(out_dir)
    save_model(model, out_dir, saved_spec(pruned_dir), probe=task.probe(model))
    shutil.copy(Path(pruned_dir) / PRUNE_REPORT, out_dir / PRUNE_REPORT)
    summary = {"epochs": len(result.history), "best_metric": result.best_metric, "history": result.history}
    (out_dir / "finetune.json").write_text(json.dumps(summary, indent=2))
    return summary


def validate(
    dense_dir: str | Path, candidate_dir: str | Path, recipe: Recipe, task_path: str, out_dir: str | Path
) -> tuple[bool, Evidence]:
    """Measure the candidate on the target, export its ONNX file, apply the gates.

    Writes ``evidence.json`` (:class:`pruneops.evidence.Evidence`: measurements, gate checks)
    and ``model.onnx`` into ``out_dir``.

    >>> from pruneops.modelio import build_model
    >>> from pruneops.tasks.digits import task
    >>> tmp, model, task_path = Path(tempfile.mkdtemp()), build_model(task.arch), "pruneops.tasks.digits:task"
    >>> dense = save_model(model, tmp / "dense", task.arch, probe=task.probe(model))
    >>> recipe = parse_recipe({
    ...     "prune": {"sparsity": 0.5},
    ...     "validate": {"runtimes": ["torch"], "batch_sizes": [8], "iterations": 5, "warmup": 1},
    ...     "gates": {"max_accuracy_drop": 1.0},
    ... })
    >>> _ = prune(dense, recipe, task_path, tmp / "pruned")
    >>> passed, evidence = validate(dense, tmp / "pruned", recipe, task_path, tmp / "evidence")
    >>> passed, evidence.prune.sparsity, sorted(p.name for p in (tmp / "evidence").iterdir())
    (True, 0.5, ['evidence.json', 'model.onnx'])
    """
    from pruneops.export import describe_onnx, export_onnx, parity
    from pruneops.gates import evaluate_gates
    from pruneops.validate import measured_onnx
    from pruneops.validate import validate as run_validate

    task: Task = load_task(task_path)
    dense, candidate = load_model(dense_dir), load_model(candidate_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        report = run_validate(dense, candidate, task, recipe.validate_, workdir=scratch)
        measured = measured_onnx(scratch)
        if measured is not None:  # the very file ONNX Runtime was measured on ships (one export, not two)
            shutil.copyfile(measured, out_dir / ONNX_FILE)
            exported = describe_onnx(out_dir / ONNX_FILE)
        else:
            exported = export_onnx(candidate, task.example_input(2), out_dir / ONNX_FILE)
    gate = evaluate_gates(*report.measured(), recipe.gates)
    check = parity(candidate, exported.path, task.example_input(16))
    evidence = Evidence(
        validation=ValidationEvidence.model_validate(report),
        gate=GateEvidence.model_validate(gate),
        onnx=OnnxEvidence(bytes=exported.bytes, opset=exported.opset, max_abs=check.max_abs, max_rel=check.max_rel),
        prune=PruneEvidence.model_validate_json((Path(candidate_dir) / PRUNE_REPORT).read_text()),
    )
    evidence.write(out_dir)
    return gate.passed, evidence


def register(
    model_name: str,
    parent_version: str,
    candidate_dir: str | Path,
    evidence_dir: str | Path,
    recipe: Recipe,
    task_path: str,
    report_html: str | Path | None = None,
    run_key: str = "",
) -> str:
    """Register the candidate as a new version, gate passed or failed, with lineage and evidence.

    ``run_key`` (the KFP run id) makes registration idempotent per run: a retried or
    re-entered register step returns the version the first attempt created.

    >>> from pruneops.modelio import build_model
    >>> from pruneops.onboard import register_model
    >>> from pruneops.registry import Registry
    >>> from pruneops.tasks.digits import task
    >>> os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db"
    >>> tmp, model, task_path = Path(tempfile.mkdtemp()), build_model(task.arch), "pruneops.tasks.digits:task"
    >>> source = register_model("digits", model, arch=task.arch, task=task_path)
    >>> dense = save_model(model, tmp / "dense", task.arch, probe=task.probe(model))
    >>> recipe = parse_recipe({
    ...     "prune": {"sparsity": 0.5},
    ...     "validate": {"runtimes": ["torch"], "batch_sizes": [8], "iterations": 5, "warmup": 1},
    ... })
    >>> _ = prune(dense, recipe, task_path, tmp / "pruned")
    >>> _ = validate(dense, tmp / "pruned", recipe, task_path, tmp / "evidence")
    >>> version = register("digits", source.version, tmp / "pruned", tmp / "evidence", recipe, task_path, run_key="r1")
    >>> version, register("digits", source.version, tmp / "pruned", tmp / "evidence", recipe, task_path, run_key="r1")
    ('2', '2')
    >>> Registry().version("digits", version).tag("parent_version")
    '1'
    >>> del os.environ["MLFLOW_TRACKING_URI"]
    """
    from pruneops.layout import REPORT_DIR, REPORT_HTML
    from pruneops.registry import Registry

    evidence = Evidence.read(evidence_dir)
    task = load_task(task_path)
    tags = lineage_tags(evidence, recipe, parent_version, task_path)
    reference, columns = task.reference_table(load_model(candidate_dir))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        shutil.copytree(candidate_dir, folder)
        shutil.copy(Path(evidence_dir) / ONNX_FILE, folder / ONNX_FILE)
        (folder / MASKS_FILE).unlink(missing_ok=True)
        extra = {}
        if report_html and Path(report_html).is_file():
            page = Path(tmp) / Path(REPORT_HTML).name  # KFP names the file "report"; MLflow shows .html inline
            shutil.copy(report_html, page)
            extra[REPORT_DIR] = str(page)
        info = Registry().register(
            model_name,
            folder,
            tags=tags,
            metrics=evidence.metrics(),
            reference=reference,
            feature_names=columns,
            report=evidence,
            extra_artifacts=extra,
            key=f"kfp:{run_key}:register" if run_key else None,
            params=run_params(recipe, model_name, parent_version, task_path, run_key),
            step_metrics=step_series(Path(candidate_dir), evidence),
        )
    return info.version


def set_challenger(model_name: str, version: str, why: str = "pipeline gate passed") -> None:
    """Give a version whose gate passed the alias ``challenger``.

    >>> from pruneops.modelio import build_model
    >>> from pruneops.onboard import register_model
    >>> from pruneops.registry import Registry
    >>> from pruneops.tasks.digits import task
    >>> os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db"
    >>> source = register_model("digits", build_model(task.arch), arch=task.arch, task="pruneops.tasks.digits:task")
    >>> set_challenger("digits", source.version, why="example")
    >>> sorted(Registry().aliases("digits").items())
    [('challenger', '1'), ('champion', '1')]
    >>> del os.environ["MLFLOW_TRACKING_URI"]
    """
    from pruneops.registry import CHALLENGER, Registry

    Registry().set_alias(model_name, CHALLENGER, version, why)


def lineage_tags(evidence: Evidence, recipe: Recipe, parent_version: str, task_path: str) -> dict[str, Any]:
    """The ``pruneops.*`` tags of a pipeline-made version (DESIGN.md's shared names).

    ``speedup`` and ``runtime`` are the first runtime's, at its largest (Offline) batch.

    >>> from pruneops.modelio import build_model
    >>> from pruneops.tasks.digits import task
    >>> tmp, model, task_path = Path(tempfile.mkdtemp()), build_model(task.arch), "pruneops.tasks.digits:task"
    >>> dense = save_model(model, tmp / "dense", task.arch, probe=task.probe(model))
    >>> recipe = parse_recipe({
    ...     "prune": {"method": "magnitude", "sparsity": 0.5},
    ...     "validate": {"runtimes": ["torch"], "batch_sizes": [8], "iterations": 5, "warmup": 1},
    ... })
    >>> _ = prune(dense, recipe, task_path, tmp / "pruned")
    >>> passed, evidence = validate(dense, tmp / "pruned", recipe, task_path, tmp / "evidence")
    >>> tags = lineage_tags(evidence, recipe, "1", task_path)
    >>> tags["gate"] == ("passed" if passed else "failed")
    True
    >>> tags["method"], tags["pattern"], tags["sparsity"], tags["runtime"]
    ('magnitude', 'unstructured', '0.5000', 'torch')
    """
    validation, gate = evidence.validation, evidence.gate
    first = validation.runtimes[0] if validation.runtimes else None
    sparse = [r for r in validation.runtimes if r.runtime == "torch-sparse"]
    sparse_layers = sparse[0].evidence["candidate"].get("sparse_layers", []) if sparse else []
    return {
        "source": "pipeline",
        "parent_version": parent_version,
        "task": task_path,
        "recipe_sha256": recipe.sha256(),
        "method": recipe.prune.method,
        "pattern": recipe.prune.pattern,
        "sparsity": f"{evidence.prune.sparsity:.4f}",
        "accuracy": f"{validation.candidate_score:.6f}",
        "accuracy_drop": f"{validation.accuracy_drop:.6f}",
        "speedup": f"{first.offline.speedup.ratio:.4f}" if first else None,
        "runtime": first.runtime if first else None,
        "device": validation.device,
        "sparse_kernels": f"{len(sparse_layers)} layers" if sparse_layers else "none",
        "gate": "passed" if gate.passed else "failed",
        "gate_reasons": "; ".join(gate.reasons)[:4900] or None,
        # The rollout controller analyses this version in serving against these thresholds.
        "rollout": recipe.rollout.model_dump_json(),
    }


def run_params(recipe: Recipe, model_name: str, parent_version: str, task_path: str, run_key: str) -> dict[str, str]:
    """The MLflow params of a registration: the whole recipe flattened, and where the model came from.

    >>> from pruneops.recipe import parse_recipe
    >>> params = run_params(parse_recipe({"prune": {"method": "wanda", "pattern": "2:4"}}), "m", "1", "t", "")
    >>> params["prune.method"], params["parent_version"], params["kfp_run_id"]
    ('wanda', '1', 'local')
    """
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif value is not None:
            flat[prefix] = value if isinstance(value, str) else json.dumps(value)

    walk("", recipe.to_dict())
    return flat | {
        "source_model": model_name,
        "parent_version": parent_version,
        "task": task_path,
        "kfp_run_id": run_key or "local",
    }


def step_series(candidate_dir: Path, evidence: Evidence) -> dict[str, list[float]]:
    """Per-step metrics for MLflow's charts: sparsity per pruning step, loss and metrics per fine-tuning epoch.

    >>> from pruneops.evidence import PruneEvidence
    >>> tmp = Path(tempfile.mkdtemp())
    >>> history = [{"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": 0.4}]
    >>> _ = (tmp / "finetune.json").write_text(json.dumps({"history": history}))
    >>> steps = [{"step": 1, "sparsity": 0.25}, {"step": 2, "sparsity": 0.5}]
    >>> pruned = PruneEvidence(method="magnitude", pattern="unstructured", sparsity=0.5, steps=steps)
    >>> evidence = Evidence.model_construct(prune=pruned)
    >>> step_series(tmp, evidence)
    {'prune_step_sparsity': [0.25, 0.5], 'finetune_train_loss': [0.9, 0.4]}
    """
    series: dict[str, list[float]] = {}
    for step in evidence.prune.steps:
        series.setdefault("prune_step_sparsity", []).append(float(step["sparsity"]))
    summary = candidate_dir / "finetune.json"
    history = json.loads(summary.read_text()).get("history", []) if summary.is_file() else []
    for epoch in history:
        for key, value in epoch.items():
            if key != "epoch" and isinstance(value, (int, float)):
                series.setdefault(f"finetune_{key}", []).append(float(value))
    return series
