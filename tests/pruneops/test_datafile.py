"""The built-in data-file task: npz and parquet, four metrics, no pickle, checked digests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pruneops.errors import IntegrityError, TaskError
from pruneops.integrity import sha256_file
from pruneops.tasks import load_task
from pruneops.tasks.datafile import DataFileTask, load_data_task, parse_spec

pytestmark = pytest.mark.unit


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "set.npz"
    np.savez(path, inputs=rng.normal(size=(100, 6)).astype(np.float32), labels=rng.integers(0, 3, 100))
    return path


def test_npz_classification_splits_and_scores(npz: Path) -> None:
    task = load_task(f"data:{npz}#metric=accuracy")
    assert isinstance(task, DataFileTask) and task.output_kind == "classes"
    train = torch.cat([x for x, _ in task.train_batches(16, seed=0)])
    held_out = torch.cat([x for x, _ in task.eval_batches()])
    assert (len(train), len(held_out)) == (80, 20)
    model = torch.nn.Linear(6, 3)
    metrics = task.evaluate(model)
    assert set(metrics) == {"accuracy", "f1"} and 0 <= metrics["accuracy"] <= 1
    # A model that returns the labels' one-hot scores every row right.
    labels = torch.cat([y for _, y in task.eval_batches()])
    assert task.loss(torch.nn.functional.one_hot(labels, 3).float() * 20, labels) < 1e-6


def test_parquet_regression_with_mse(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    table = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    table["label"] = table["a"] * 2.0
    path = tmp_path / "reg.parquet"
    table.to_parquet(path)
    task = load_task(f"data:{path}#metric=mse")
    assert task.primary_metric == "neg_mse" and task.feature_names == ["x0", "x1", "x2"]
    exact = torch.nn.Linear(3, 1)
    with torch.no_grad():
        exact.weight.copy_(torch.tensor([[2.0, 0.0, 0.0]]))
        exact.bias.zero_()
    assert task.evaluate(exact)["mse"] < 1e-10


def test_token_ids_are_summarised_for_drift(tmp_path: Path) -> None:
    path = tmp_path / "tokens.npz"
    ids = np.random.default_rng(0).integers(0, 1000, (40, 64))
    np.savez(path, inputs=ids, labels=np.random.default_rng(1).normal(size=(40, 8)).astype(np.float32))
    task = load_task(f"data:{path}#metric=cosine")
    assert task.example_input(2).dtype == torch.int64
    assert task.feature_names == ["mean", "std", "min", "max", "zero_share"]
    assert task.reference_sample().shape == (32, 5)


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, inputs=np.array([object()] * 20, dtype=object), labels=np.zeros(20))
    with pytest.raises(TaskError, match=r"cannot read evil\.npz"):
        load_task(f"data:{path}#metric=accuracy")


def test_a_changed_file_is_refused_by_its_digest(npz: Path) -> None:
    spec = f"data:{npz}#metric=accuracy&sha256={sha256_file(npz)}"
    load_data_task.cache_clear()
    assert load_task(spec).name == "set"
    np.savez(npz, inputs=np.zeros((30, 6), np.float32), labels=np.zeros(30, np.int64))
    load_data_task.cache_clear()
    with pytest.raises(IntegrityError, match="does not match the sha256"):
        load_task(spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("data:x.npz", "metric must be one of"),
        ("data:x.npz#metric=auc", "metric must be one of"),
        ("data:x.csv#metric=f1", "must be .npz or .parquet"),
        ("data:x.npz#metric=f1&eval=1", "unknown option"),
    ],
)
def test_bad_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        parse_spec(spec)


def test_float_labels_cannot_score_accuracy(tmp_path: Path) -> None:
    path = tmp_path / "floats.npz"
    np.savez(path, inputs=np.zeros((20, 2), np.float32), labels=np.zeros(20, np.float32))
    with pytest.raises(TaskError, match="integer class labels"):
        load_task(f"data:{path}#metric=accuracy")
