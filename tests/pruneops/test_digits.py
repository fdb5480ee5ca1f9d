"""The digits reference task: accuracy, determinism, data shapes, task loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pruneops.errors import TaskError
from pruneops.tasks import load_task
from pruneops.tasks.digits import DigitsTask, task

pytestmark = pytest.mark.unit


def test_baseline_reaches_95_percent(digits_baseline: torch.nn.Module) -> None:
    metrics = task.evaluate(digits_baseline)
    assert metrics["accuracy"] >= 0.95
    assert metrics["macro_f1"] >= 0.95
    assert all(f"accuracy_class_{c}" in metrics for c in range(10))


def test_same_seed_gives_identical_weights(digits_baseline: torch.nn.Module) -> None:
    again = DigitsTask().train_baseline(seed=0)
    for (name, a), b in zip(digits_baseline.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_different_seed_gives_different_weights(digits_baseline: torch.nn.Module) -> None:
    other = DigitsTask(epochs=1).train_baseline(seed=1)
    first = next(iter(digits_baseline.state_dict().values()))
    assert not torch.equal(first, next(iter(other.state_dict().values())))


def test_data_shapes_and_split() -> None:
    x, y = next(task.train_batches(32, seed=0))
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    n_eval = sum(len(y) for _, y in task.eval_batches())
    n_train = sum(len(y) for _, y in task.train_batches(64, seed=0))
    assert (n_train, n_eval) == (1437, 360)
    assert len(task.calibration_batches(3)) == 3


def test_train_order_depends_on_seed_only() -> None:
    a = next(task.train_batches(16, seed=5))[1]
    b = next(task.train_batches(16, seed=5))[1]
    c = next(task.train_batches(16, seed=6))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_reference_features() -> None:
    reference = task.reference_sample()
    assert reference.shape == (500, 64) and reference.dtype == np.float32
    assert len(task.feature_names) == 64
    assert task.features(task.example_input(3).numpy()).shape == (3, 64)


def test_load_task_by_import_path() -> None:
    assert load_task("pruneops.tasks.digits:task") is task
    assert isinstance(load_task("pruneops.tasks.digits:DigitsTask"), DigitsTask)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("pruneops.tasks.digits", "must look like 'package.module:Name'"),
        ("no_such_package.tasks:task", "is not trusted"),
        ("pruneops.no_such_module:task", "cannot import"),
        ("pruneops.tasks.digits:NUM_CLASSES", "not a pruneops Task"),
    ],
)
def test_load_task_errors(path: str, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        load_task(path)
