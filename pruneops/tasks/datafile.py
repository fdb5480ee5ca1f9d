"""The built-in data-file task: a file of inputs (and labels) and a metric, no Python to write.

A task spec ``data:<uri>#metric=<metric>&sha256=<hex>`` names it, wherever a task import path
goes (``--task``, the ``pruneops.task`` tag). ``<uri>`` is anything MLflow downloads: a local
path, ``runs:/<run>/data/eval.npz``, ``s3://...``; ``pruneops register --data`` logs the file
to MLflow and writes the spec. The file is read without pickle:

- ``.npz`` (``numpy.load(allow_pickle=False)``): array ``inputs`` (N rows of any shape: features,
  token ids, images) and ``labels`` (class ids, or target values);
- ``.parquet``: one row per input, numeric feature columns, and a ``label`` column.

Metrics (the primary one is higher-is-better, so gates compare them alike):

============  =====================================  ==============  ===================
metric        labels                                 outputs         primary metric
============  =====================================  ==============  ===================
``accuracy``  class ids                              class scores    ``accuracy``
``f1``        class ids                              class scores    ``f1`` (macro)
``mse``       target values                          values          ``neg_mse``
``cosine``    the dense model's outputs              values          ``cosine``
============  =====================================  ==============  ===================

For ``cosine`` the labels are the dense model's own outputs on the inputs: ``pruneops register``
records them, so an encoder needs no labels at all. A fixed 80/20 split (seed 0) gives
training and evaluation rows. With ``sha256`` in the spec, the downloaded file must match it.

>>> import tempfile, numpy as np
>>> path = tempfile.mkdtemp() + "/set.npz"
>>> rng = np.random.default_rng(0)
>>> np.savez(path, inputs=rng.normal(size=(50, 4)).astype(np.float32), labels=rng.integers(0, 3, 50))
>>> task = load_data_task(f"data:{path}#metric=f1")
>>> task.primary_metric, task.output_kind, tuple(task.example_input(2).shape)
('f1', 'classes', (2, 4))
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pruneops.errors import IntegrityError, TaskError
from pruneops.probe import CLASSES, VALUES
from pruneops.tasks import Batch, Task

SCHEME = "data:"
METRICS = {"accuracy": "accuracy", "f1": "f1", "mse": "neg_mse", "cosine": "cosine"}
SUFFIXES = (".npz", ".parquet")
LABEL_COLUMN = "label"
EVAL_SHARE = 0.2
#: Rows of training data kept as the drift reference sample.
REFERENCE_ROWS = 512
#: Inputs wider than this are summarised per row (mean, std, min, max, zero share) for drift.
MAX_FEATURE_COLUMNS = 32


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``data:`` task spec."""

    uri: str
    metric: str
    sha256: str | None = None

    def __str__(self) -> str:
        options = f"metric={self.metric}" + (f"&sha256={self.sha256}" if self.sha256 else "")
        return f"{SCHEME}{self.uri}#{options}"


def parse_spec(spec: str) -> DataSpec:
    """Parse ``data:<uri>#metric=...&sha256=...``; anything else raises :class:`TaskError`.

    >>> parse_spec("data:runs:/abc/data/eval.npz#metric=cosine")
    DataSpec(uri='runs:/abc/data/eval.npz', metric='cosine', sha256=None)
    >>> parse_spec("data:eval.csv#metric=accuracy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneops.errors.TaskError: data task 'data:eval.csv#metric=accuracy': the file must be .npz or .parquet
    """
    uri, _, fragment = spec.removeprefix(SCHEME).partition("#")
    options = {key: values[-1] for key, values in parse_qs(fragment).items()}
    unknown = set(options) - {"metric", "sha256"}
    if unknown:
        raise TaskError(f"data task {spec!r}: unknown option(s) {sorted(unknown)}; known: metric, sha256")
    metric = options.get("metric", "")
    if metric not in METRICS:
        raise TaskError(f"data task {spec!r}: metric must be one of {sorted(METRICS)} (as #metric=accuracy)")
    if not uri.endswith(SUFFIXES):
        raise TaskError(f"data task {spec!r}: the file must be .npz or .parquet")
    return DataSpec(uri, metric, options.get("sha256"))


def read_data_file(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(inputs, labels)`` from an ``.npz`` or ``.parquet`` file, without unpickling anything.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "eval.npz"
    >>> np.savez(path, inputs=np.zeros((10, 4)), labels=np.arange(10) % 2)
    >>> inputs, labels = read_data_file(path)
    >>> inputs.dtype, inputs.shape, labels[:3].tolist()
    (dtype('float32'), (10, 4), [0, 1, 0])
    >>> np.savez(path, features=np.zeros((10, 4)))
    >>> read_data_file(path)
    Traceback (most recent call last):
    ...
    pruneops.errors.TaskError: eval.npz has no 'inputs' array (it has ['features'])
    """
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                if "inputs" not in arrays:
                    raise TaskError(f"{path.name} has no 'inputs' array (it has {sorted(arrays.files)})")
                inputs = arrays["inputs"]
                labels = arrays.get("labels", None)
        else:
            import pandas as pd

            table = pd.read_parquet(path)
            labels = table.pop(LABEL_COLUMN).to_numpy() if LABEL_COLUMN in table else None
            inputs = table.to_numpy(dtype=np.float32)
    except (OSError, ValueError, KeyError) as err:
        raise TaskError(f"cannot read {path.name}: {err}") from None
    if inputs.dtype.kind == "f":
        inputs = inputs.astype(np.float32)
    elif inputs.dtype.kind in "iu":
        inputs = inputs.astype(np.int64)  # token ids
    else:
        raise TaskError(f"{path.name}: inputs must be numbers, not {inputs.dtype}")
    if labels is not None and len(labels) != len(inputs):
        raise TaskError(f"{path.name}: {len(inputs)} inputs but {len(labels)} labels")
    if len(inputs) < 10:
        raise TaskError(f"{path.name}: {len(inputs)} rows; a task needs at least 10 (80/20 split)")
    return inputs, labels


class DataFileTask(Task):
    """A task read from a data file (see the module docstring)."""

    def __init__(self, spec: DataSpec, inputs: np.ndarray, labels: np.ndarray) -> None:
        self.spec = spec
        self.name = Path(spec.uri).stem
        self.primary_metric = METRICS[spec.metric]
        self.output_kind = CLASSES if spec.metric in ("accuracy", "f1") else VALUES
        order = np.random.default_rng(0).permutation(len(inputs))
        held_out = max(1, round(len(inputs) * EVAL_SHARE))
        self._train, self._eval = order[held_out:], order[:held_out]
        self._inputs = torch.from_numpy(inputs)
        if self.output_kind == CLASSES:
            if labels.dtype.kind not in "iu":
                raise TaskError(f"metric {spec.metric} needs integer class labels, not {labels.dtype}")
            self._labels = torch.from_numpy(labels.astype(np.int64))
        else:
            self._labels = torch.from_numpy(labels.astype(np.float32))

    def _batches(self, rows: np.ndarray, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(rows), batch_size):
            index = torch.from_numpy(rows[start : start + batch_size])
            yield self._inputs[index], self._labels[index]

    def train_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        rows = self._train[np.random.default_rng(seed).permutation(len(self._train))]
        return self._batches(rows, batch_size)

    def eval_batches(self, batch_size: int = 256) -> Iterator[Batch]:
        return self._batches(self._eval, batch_size)

    def calibration_batches(self, count: int, batch_size: int = 64) -> list[torch.Tensor]:
        return [inputs for inputs, _ in self.train_batches(batch_size, seed=1)][:count]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.output_kind == CLASSES:
            return F.cross_entropy(outputs, targets)
        targets = targets.reshape(outputs.shape)
        if self.spec.metric == "cosine":
            return (1 - F.cosine_similarity(outputs.flatten(1), targets.flatten(1))).mean()
        return F.mse_loss(outputs, targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        outputs, targets = zip(*((model(x), y) for x, y in self.eval_batches()), strict=True)
        model.train(was_training)
        out, target = torch.cat(outputs).float(), torch.cat(targets)
        if self.output_kind == CLASSES:
            from sklearn.metrics import f1_score

            predicted = out.argmax(dim=1).numpy()
            return {
                "accuracy": float((predicted == target.numpy()).mean()),
                "f1": float(f1_score(target.numpy(), predicted, average="macro")),
            }
        target = target.reshape(out.shape)  # 1-D regression labels against (N, 1) outputs
        mse = float(F.mse_loss(out.flatten(1), target.flatten(1)))
        cosine = float(F.cosine_similarity(out.flatten(1), target.flatten(1)).mean())
        return {"neg_mse": -mse, "mse": mse, "cosine": cosine}

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return self._inputs[torch.from_numpy(self._train[:batch_size])]

    def features(self, inputs: np.ndarray) -> np.ndarray:
        rows = np.asarray(inputs, np.float32).reshape(len(inputs), -1)
        if rows.shape[1] <= MAX_FEATURE_COLUMNS:
            return rows
        return np.column_stack([rows.mean(1), rows.std(1), rows.min(1), rows.max(1), (rows == 0).mean(1)]).astype(
            np.float32
        )

    @functools.cached_property
    def feature_names(self) -> list[str]:
        width = int(np.prod(self._inputs.shape[1:]))
        if width <= MAX_FEATURE_COLUMNS:
            return [f"x{i}" for i in range(width)]
        return ["mean", "std", "min", "max", "zero_share"]

    def reference_sample(self) -> np.ndarray:
        return self.features(self._inputs[torch.from_numpy(self._train[:REFERENCE_ROWS])].numpy())

    def reference_predictions(self, model: nn.Module) -> np.ndarray | None:
        if self.output_kind != CLASSES:
            return None
        with torch.no_grad():
            inputs = self._inputs[torch.from_numpy(self._train[:REFERENCE_ROWS])]
            predictions: np.ndarray = model.eval()(inputs).argmax(dim=1).numpy()
            return predictions

    def train_baseline(self, seed: int = 0) -> nn.Module:
        raise TaskError(f"the data task {self.name!r} trains no baseline: register your trained model with it")


@functools.lru_cache(maxsize=8)
def load_data_task(spec: str, tracking_uri: str | None = None) -> DataFileTask:
    """The task a ``data:`` spec names: its file downloaded (and checked against ``sha256``) and read.

    The file comes from ``tracking_uri``'s artifact store (default: the process's tracking URI).
    """
    import mlflow

    from pruneops import settings
    from pruneops.integrity import sha256_file

    parsed = parse_spec(spec)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=parsed.uri, dst_path=tmp, tracking_uri=tracking_uri or settings.tracking_uri()
                )
            )
        except Exception as err:  # noqa: BLE001 - MLflow raises per store; all mean "cannot fetch"
            raise TaskError(f"data task: cannot fetch {parsed.uri}: {str(err).splitlines()[0]}") from None
        if parsed.sha256 and sha256_file(local) != parsed.sha256:
            raise IntegrityError(f"data task: {parsed.uri} does not match the sha256 recorded in its spec")
        inputs, labels = read_data_file(local)
    if labels is None:
        raise TaskError(
            f"{parsed.uri} has no labels; for metric cosine, register the model with it "
            "(pruneops register records the dense model's outputs as labels)"
        )
    return DataFileTask(parsed, inputs, labels)
