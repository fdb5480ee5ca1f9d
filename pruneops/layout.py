"""A version's artifact layout, made ready on disk before anything is registered (no MLflow here).

Every model version carries ``model/`` (the pruneops model folder, proven against its probe,
with ``model.onnx`` and an ``MLmodel``), ``reference/reference.parquet`` (the drift reference
sample) and ``report/`` (``evaluation.json``, the run's evidence, and ``report.html``).
:class:`pruneops.registry.Registry` uploads what these functions prepare.

>>> REPORT_HTML
'report/report.html'
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pruneops.integrity import MLFLOW_BOOKKEEPING

MODEL_DIR, REFERENCE_DIR, REPORT_DIR = "model", "reference", "report"
REFERENCE_FILE, REPORT_FILE = "reference.parquet", "evaluation.json"
REPORT_HTML = f"{REPORT_DIR}/report.html"  # the run's HTML page (pruneops.report), as MLflow lists it


def stage_version(model_dir: Path, staged: Path, runtime: str | None = None) -> Path:
    """Copy ``model_dir`` to ``staged`` and make it a version: proven, with ONNX and an MLmodel.

    The folder must load and reproduce its probe (a save that lost anything is refused). A
    folder without ``model.onnx`` gets one, exported on the probe's inputs; the ONNX file
    must agree with the probe too. Then :func:`pruneops.mlmodel.add_mlmodel` makes it an
    MLflow model (and an encoder imported from a transformers source gets that flavor too,
    checked against the probe). The caller's folder is not changed.

    >>> import tempfile, torch
    >>> from pruneops.modelio import ArchSpec, save_model
    >>> from pruneops.probe import CLASSES, record
    >>> layer, spec = torch.nn.Linear(4, 3), ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 3})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     saved = save_model(layer, Path(tmp) / "mine", spec, probe=record(layer, torch.randn(8, 4), CLASSES))
    ...     staged = stage_version(saved, Path(tmp) / MODEL_DIR)
    ...     {"MLmodel", "model.onnx", "model.safetensors"} <= {p.name for p in staged.iterdir()}
    True
    """
    import torch

    from pruneops.encoders import add_transformers_flavor
    from pruneops.export import export_onnx, onnx_outputs
    from pruneops.mlmodel import ONNX_FILE, add_mlmodel
    from pruneops.modelio import verify_saved
    from pruneops.probe import Probe, check_outputs

    shutil.copytree(model_dir, staged, ignore=lambda _folder, names: MLFLOW_BOOKKEEPING & set(names))
    model = verify_saved(staged)
    probe = Probe.load(staged)
    onnx_path = staged / ONNX_FILE
    if not onnx_path.is_file():
        export_onnx(model, torch.from_numpy(probe.inputs[:2]), onnx_path)
    check_outputs(probe, onnx_outputs(onnx_path, probe.inputs), f"{model_dir / ONNX_FILE}")
    add_mlmodel(staged, probe, runtime)  # runtime: the one validation picked, which the server will use
    add_transformers_flavor(staged, model, probe)  # an encoder from a transformers source
    return staged


def write_reference(folder: Path, reference: np.ndarray | None, feature_names: list[str] | None) -> Path | None:
    """The drift reference sample as ``reference.parquet`` in ``folder`` (None when there is none).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = write_reference(Path(tmp) / REFERENCE_DIR, np.eye(2), ["a", "b"])
    ...     sorted(p.name for p in folder.iterdir())
    ['reference.parquet']
    """
    if reference is None:
        return None
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    columns = feature_names or [f"f{i}" for i in range(reference.shape[1])]
    pd.DataFrame(np.asarray(reference), columns=columns).to_parquet(folder / REFERENCE_FILE)
    return folder
