"""The run report: one self-contained HTML page with plots, logged to MLflow and shown in KFP.

Plots (PNG, embedded as base64): accuracy dense vs pruned, median latency dense vs pruned
per runtime and batch size, and per-layer sparsity. Then the gate checks, each with its
sentence.

>>> from pruneops.evidence import Evidence
>>> evidence = Evidence.model_validate({"validation": {"target": "cpu", "device": "cpu",
...     "primary_metric": "accuracy", "accuracy_drop": 0.01, "dense_metrics": {"accuracy": 0.99},
...     "candidate_metrics": {"accuracy": 0.98}}, "gate": {"passed": False, "reasons": ["slow"],
...     "checks": [{"gate": "speedup", "passed": False, "message": "1.1x < 1.3x"}]},
...     "prune": {"method": "magnitude", "pattern": "channels", "sparsity": 0.5}})
>>> html = render(evidence, title="digits v2")
>>> "<h1>digits v2</h1>" in html, "<td class='bad'>FAIL</td><td>1.1x &lt; 1.3x</td>" in html
(True, True)
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from pruneops.evidence import Evidence, PruneEvidence, ValidationEvidence


def render(evidence: Evidence, title: str) -> str:
    """The report page for one pipeline run's evidence.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from pruneops import steps
    >>> from pruneops.modelio import build_model, save_model
    >>> from pruneops.recipe import parse_recipe
    >>> from pruneops.tasks.digits import task
    >>> tmp, model, task_path = Path(tempfile.mkdtemp()), build_model(task.arch), "pruneops.tasks.digits:task"
    >>> dense = save_model(model, tmp / "dense", task.arch, probe=task.probe(model))
    >>> recipe = parse_recipe({
    ...     "prune": {"sparsity": 0.5},
    ...     "validate": {"runtimes": ["torch"], "batch_sizes": [8], "iterations": 5, "warmup": 1},
    ...     "gates": {"max_accuracy_drop": 1.0},
    ... })
    >>> _ = steps.prune(dense, recipe, task_path, tmp / "pruned")
    >>> passed, evidence = steps.validate(dense, tmp / "pruned", recipe, task_path, tmp / "evidence")
    >>> page = render(evidence, "digits <v2>")
    >>> "<h1>digits &lt;v2&gt;</h1>" in page, 'Gate: <b class="ok">passed</b>' in page, page.count("<img")
    (True, True, 2)
    """
    validation, gate, prune = evidence.validation, evidence.gate, evidence.prune
    primary = validation.primary_metric
    verdict = "passed" if gate.passed else "failed"
    rows = "".join(
        f"<tr><td>{html.escape(c.gate)}</td><td class='{'ok' if c.passed else 'bad'}'>"
        f"{'pass' if c.passed else 'FAIL'}</td><td>{html.escape(c.message)}</td></tr>"
        for c in gate.checks
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}td,th{{padding:4px 10px;text-align:left}}
.ok{{color:#087f23}}.bad{{color:#b00020;font-weight:bold}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(prune.method)} / {html.escape(prune.pattern)}, sparsity {prune.sparsity:.3f};
{html.escape(primary)} {validation.candidate_score:.4f} vs dense {validation.dense_score:.4f}
(drop {validation.accuracy_drop:.4f}) on {html.escape(validation.device)}.
Gate: <b class="{"ok" if gate.passed else "bad"}">{verdict}</b>.</p>
<h2>Gates</h2><table><tr><th>gate</th><th>result</th><th>detail</th></tr>{rows}</table>
<h2>Accuracy and latency</h2><img alt="accuracy and latency" src="data:image/png;base64,{_speed_plot(validation)}">
<h2>Per-layer sparsity</h2><img alt="per-layer sparsity" src="data:image/png;base64,{_sparsity_plot(prune)}">
</body></html>"""


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _speed_plot(validation: ValidationEvidence) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, lat) = plt.subplots(1, 2, figsize=(11, 3.5))
    values = [validation.dense_score, validation.candidate_score]
    acc.bar(["dense", "pruned"], values, color=["#888", "#1f77b4"])
    acc.set(title=validation.primary_metric, ylim=(min(values) - 0.05, 1.0))
    labels, dense, pruned = [], [], []
    for runtime in validation.runtimes:
        for batch, row in sorted(runtime.batches.items()):
            labels.append(f"{runtime.runtime}\nbatch {batch}")
            dense.append(row.dense.p50_ms)
            pruned.append(row.candidate.p50_ms)
    xs = range(len(labels))
    lat.bar([x - 0.2 for x in xs], dense, 0.4, label="dense", color="#888")
    lat.bar([x + 0.2 for x in xs], pruned, 0.4, label="pruned", color="#1f77b4")
    lat.set_xticks(list(xs), labels, fontsize=8)
    spread = max(dense) / max(min(pruned), 1e-9) if dense else 1.0
    lat.set(title="median latency (ms)", yscale="log" if spread > 50 else "linear")
    lat.legend()
    return _png(fig)


def _sparsity_plot(prune: PruneEvidence) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = prune.layers
    fig, ax = plt.subplots(figsize=(11, 3))
    names = [layer["name"] for layer in layers]
    shrink = [1 - layer["numel"] / max(_numel(layer["shape_before"]), 1) for layer in layers]
    zeros = [layer["sparsity"] for layer in layers]
    ax.bar(names, [max(a, b) for a, b in zip(shrink, zeros, strict=True)], color="#1f77b4")
    ax.set(ylim=(0, 1), ylabel="removed or zero")
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    return _png(fig)


def _numel(shape: list[int]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total
