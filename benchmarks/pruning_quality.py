"""Accuracy against sparsity for every criterion and pattern: digits CNN and MiniLM.

Writes ``benchmarks/results/pruning_quality.json`` and ``pruning_quality.png``.

- digits: test accuracy after one-shot pruning and after recovery fine-tuning (3 epochs,
  distillation from the dense model), for each criterion at 30/50/70/90% unstructured, 2:4,
  and 25/50/75% channels. Movement is run as it is meant to be, iteratively, with its scores
  gathered during fine-tuning (it has no one-shot accuracy).
- MiniLM (all-MiniLM-L6-v2, when installed): mean cosine similarity between pruned and
  dense sentence embeddings on 64 held-out generated sentences, one-shot and after
  embedding distillation (1 - cosine to the dense embedding, 3 epochs on 256 sentences).

Run: ``.venv/bin/python benchmarks/pruning_quality.py`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pruneops.finetune import finetune
from pruneops.pruning import from_spec, glob_filter, make_permanent, prune_
from pruneops.recipe import DistillSpec, FinetuneSpec, parse_recipe
from pruneops.schedule import prune_and_recover
from pruneops.tasks.digits import task

RESULTS = Path(__file__).parent / "results"
METHODS = ["random", "magnitude", "taylor", "wanda", "sparsegpt", "movement"]
CHANNEL_METHODS = ["random", "magnitude", "taylor", "bn_scale"]
RECOVERY = FinetuneSpec(epochs=3, lr=1e-3, distill=DistillSpec(temperature=2.0, alpha=0.5))


def digits_sweep() -> list[dict[str, Any]]:
    dense = task.train_baseline(seed=0)
    dense_accuracy = task.evaluate(dense)["accuracy"]
    calibration = list(task.train_batches(64, seed=4321))[:8]
    runs: list[dict[str, Any]] = []
    cases = [(m, "unstructured", s) for m in METHODS if m != "movement" for s in (0.3, 0.5, 0.7, 0.9)]
    cases += [(m, "2:4", 0.5) for m in METHODS if m != "movement"]
    cases += [(m, "channels", s) for m in CHANNEL_METHODS for s in (0.25, 0.5, 0.75)]
    runs += [_movement_run(dense, dense_accuracy, s) for s in (0.3, 0.5, 0.7, 0.9)]
    for method, pattern, sparsity in cases:
        spec: dict[str, Any] = {"method": method, "pattern": pattern}
        if pattern != "2:4":
            spec["sparsity"] = sparsity
        else:
            spec["exclude"] = ["features.0"]  # 9 inputs per filter: no group of 4
        prune_spec = parse_recipe({"prune": spec}).prune
        model = copy.deepcopy(dense)
        started = time.perf_counter()
        report = prune_(
            model,
            from_spec(prune_spec, loss_fn=task.loss),
            glob_filter(prune_spec.include, prune_spec.exclude),
            calibration,
            example_inputs=task.example_input(1),
        )
        prune_seconds = time.perf_counter() - started
        oneshot = task.evaluate(model)["accuracy"]
        finetune(model, task, RECOVERY, teacher=dense, progress=False)
        make_permanent(model)
        recovered = task.evaluate(model)["accuracy"]
        runs.append(
            {
                "model": "digits-cnn",
                "method": method,
                "pattern": pattern,
                "sparsity": round(report.sparsity, 4),
                "target_sparsity": sparsity,
                "dense_accuracy": dense_accuracy,
                "oneshot_accuracy": oneshot,
                "finetuned_accuracy": recovered,
                "params_ratio": report.params_after / report.params_before,
                "macs_ratio": (report.macs_after or 0) / (report.macs_before or 1),
                "prune_seconds": prune_seconds,
            }
        )
        print(f"digits {method:>9} {pattern:>12} {sparsity:.2f}: one-shot {oneshot:.4f} finetuned {recovered:.4f}")
    return runs


def _movement_run(dense: torch.nn.Module, dense_accuracy: float, sparsity: float) -> dict[str, Any]:
    """Movement needs training to score: iterative, 3 steps of 1 epoch (plus the dense pass that
    gathers scores), the same fine-tuning budget as the one-shot rows plus one epoch."""
    recipe = parse_recipe(
        {
            "prune": {"method": "movement", "sparsity": sparsity, "schedule": {"kind": "iterative", "steps": 3}},
            "finetune": {"epochs": 1, "lr": 1e-3, "distill": {"temperature": 2.0, "alpha": 0.5}},
        }
    )
    model = copy.deepcopy(dense)
    started = time.perf_counter()
    result = prune_and_recover(model, task, recipe.prune, recipe.finetune, teacher=dense, progress=False)
    make_permanent(model)
    recovered = task.evaluate(model)["accuracy"]
    print(f"digits  movement unstructured {sparsity:.2f}: iterative  finetuned {recovered:.4f}")
    return {
        "model": "digits-cnn",
        "method": "movement",
        "pattern": "unstructured",
        "sparsity": round(result.report.sparsity, 4),
        "target_sparsity": sparsity,
        "dense_accuracy": dense_accuracy,
        "oneshot_accuracy": None,  # movement scores come from fine-tuning; there is no one-shot
        "finetuned_accuracy": recovered,
        "schedule": "iterative, 3 steps x 1 epoch + 1 dense epoch",
        "params_ratio": 1.0,
        "macs_ratio": 1.0,
        "prune_seconds": time.perf_counter() - started,
    }


def minilm_sweep() -> list[dict[str, Any]]:
    from pruneops.models import minilm
    from pruneops.models.sentences import sentence_set

    if not minilm.available():
        print("MiniLM not installed (make bench-deps): skipping")
        return []
    dense = minilm.load()
    tok = minilm.tokenizer()
    train, test = sentence_set()
    train_batches = [minilm.encode(tok, train[i : i + 32]) for i in range(0, len(train), 32)]
    test_ids = minilm.encode(tok, test)
    with torch.no_grad():
        reference = dense(test_ids)
        teacher_train = [dense(ids) for ids in train_batches]
    runs: list[dict[str, Any]] = []
    layers = glob_filter(["encoder.encoder.layer.*"])
    cases: list[tuple[str, str, float, str | None]] = [
        (method, pattern, sparsity, None)
        for method in ("magnitude", "wanda", "sparsegpt")
        for pattern, sparsity in (("unstructured", 0.5), ("2:4", 0.5), ("unstructured", 0.7))
    ]
    # Wanda's default compares within each output row (the paper); "layer" ranks the layer.
    cases += [("wanda", "unstructured", sparsity, "layer") for sparsity in (0.5, 0.7)]
    for method, pattern, sparsity, scope in cases:
        spec: dict[str, Any] = {"method": method, "pattern": pattern}
        if pattern == "unstructured":
            spec["sparsity"] = sparsity
        if scope:
            spec["scope"] = scope
        config = from_spec(parse_recipe({"prune": spec}).prune)
        model = copy.deepcopy(dense)
        started = time.perf_counter()
        report = prune_(model, config, layers, train_batches[:4])
        row_sparsity = torch.cat([(~mask).float().mean(dim=1) for mask in report.masks.values()])
        prune_seconds = time.perf_counter() - started
        with torch.no_grad():
            oneshot = F.cosine_similarity(model(test_ids), reference).tolist()
        _distill_embeddings(model, train_batches, teacher_train)
        make_permanent(model)
        with torch.no_grad():
            distilled = F.cosine_similarity(model.eval()(test_ids), reference).tolist()
        runs.append(
            {
                "model": "all-MiniLM-L6-v2",
                "method": method,
                "pattern": pattern,
                "scope": config.scope,
                "sparsity": sparsity,
                "row_sparsity_range": [float(row_sparsity.min()), float(row_sparsity.max())],
                "oneshot_mean_cosine": sum(oneshot) / len(oneshot),
                "oneshot_min_cosine": min(oneshot),
                "distilled_mean_cosine": sum(distilled) / len(distilled),
                "distilled_min_cosine": min(distilled),
                "prune_seconds": prune_seconds,
            }
        )
        print(
            f"minilm {method:>9} {pattern:>12} {config.scope:>6} {sparsity:.2f}: "
            f"one-shot cos {runs[-1]['oneshot_mean_cosine']:.4f} distilled cos {runs[-1]['distilled_mean_cosine']:.4f}"
        )
    return runs


def _distill_embeddings(
    model: torch.nn.Module, batches: list[torch.Tensor], targets: list[torch.Tensor], epochs: int = 3
) -> None:
    """Masks stay (parametrizations); only the kept weights move toward the dense embeddings."""
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5)
    model.train()
    for _ in range(epochs):
        for ids, target in zip(batches, targets, strict=True):
            optimizer.zero_grad()
            loss = (1 - F.cosine_similarity(model(ids), target)).mean()
            loss.backward()
            optimizer.step()
    model.eval()


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    digits = [r for r in runs if r["model"] == "digits-cnn"]
    for ax, key, title in (
        (axes[0], "oneshot_accuracy", "digits: one-shot"),
        (axes[1], "finetuned_accuracy", "digits: after 3 epochs fine-tuning + KD"),
    ):
        for method in METHODS:
            points = sorted(
                (r["target_sparsity"], r[key])
                for r in digits
                if r["method"] == method and r["pattern"] == "unstructured" and r[key] is not None
            )
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=method)
        for r in digits:
            if r["pattern"] == "2:4":
                ax.scatter([0.5], [r[key]], marker="x", color="black")
        ax.set(title=title, xlabel="sparsity (unstructured; x = 2:4)", ylabel="test accuracy", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    minilm = [r for r in runs if r["model"] == "all-MiniLM-L6-v2"]
    labels = [f"{r['method']} ({r.get('scope', 'layer')})\n{r['pattern']} {r['sparsity']}" for r in minilm]
    xs = range(len(minilm))
    axes[2].bar([x - 0.2 for x in xs], [r["oneshot_mean_cosine"] for r in minilm], 0.4, label="one-shot")
    axes[2].bar([x + 0.2 for x in xs], [r["distilled_mean_cosine"] for r in minilm], 0.4, label="distilled")
    axes[2].set_xticks(list(xs), labels, fontsize=6)
    axes[2].set(title="MiniLM: cosine to dense embeddings", ylim=(0, 1.02))
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--replot", action="store_true", help="redraw the PNG from the saved JSON")
    args = parser.parse_args()
    if args.replot:
        saved = json.loads((args.out / "pruning_quality.json").read_text())
        plot(saved["runs"], args.out / "pruning_quality.png")
        return
    torch.manual_seed(0)
    started = time.perf_counter()
    runs = digits_sweep() + ([] if args.skip_minilm else minilm_sweep())
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "pruning_quality",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "torch": torch.__version__,
        "seconds": time.perf_counter() - started,
        "runs": runs,
    }
    (args.out / "pruning_quality.json").write_text(json.dumps(result, indent=2))
    plot(runs, args.out / "pruning_quality.png")
    print(f"wrote {args.out / 'pruning_quality.json'} in {result['seconds']:.0f}s")


if __name__ == "__main__":
    main()
