"""The Task protocol: how pruneops gets data and a score for a model.

A task is named by import path (``pruneops.tasks.digits:task``, or a user's
``mypkg.tasks:task``) and gives training, calibration and evaluation batches, a loss, an
``evaluate(model) -> metrics`` with one primary metric (higher is better), an example input,
the architecture of its baseline, and a reference feature sample for drift.

>>> task = load_task("pruneops.tasks.digits:task")
>>> task.primary_metric
'accuracy'
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from pruneops.errors import UntrustedCodeError
from pruneops.modelio import ArchSpec
from pruneops.probe import VALUES, Probe, record
from pruneops.trust import resolve_trusted

Batch = tuple[torch.Tensor, torch.Tensor]


class Task(ABC):
    """Base class of every task. Subclasses fill in data, loss, metrics and architecture."""

    #: Short name, used in reports and tags.
    name: str = "task"
    #: The metric that gates and early stopping compare; higher is better.
    primary_metric: str = "accuracy"
    #: The architecture of the baseline :meth:`train_baseline` builds (demos). Pipeline steps
    #: take the architecture from the source model's own ``arch.json`` instead.
    arch: ArchSpec
    #: What the model outputs: ``classes`` (a score per class) or ``values`` (embeddings,
    #: regressions). The probe saved with each model is compared accordingly.
    output_kind: str = VALUES

    @abstractmethod
    def train_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        """One epoch of shuffled ``(inputs, targets)`` batches, in an order fixed by ``seed``."""

    @abstractmethod
    def eval_batches(self, batch_size: int = 256) -> Iterator[Batch]:
        """The held-out set, always in the same order."""

    @abstractmethod
    def calibration_batches(self, count: int, batch_size: int = 64) -> list[torch.Tensor]:
        """Inputs for activation statistics (Wanda, SparseGPT), drawn from training data."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Named metrics on the held-out set, the primary metric among them."""

    @abstractmethod
    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A real input batch of the shape the model takes (for export and benchmarks)."""

    @abstractmethod
    def features(self, inputs: np.ndarray) -> np.ndarray:
        """The drift feature summary of a batch of raw inputs: one row of floats per input."""

    @property
    @abstractmethod
    def feature_names(self) -> list[str]:
        """Column names of :meth:`features`."""

    @abstractmethod
    def reference_sample(self) -> np.ndarray:
        """Feature rows of training data that drift is measured against."""

    def reference_predictions(self, model: nn.Module) -> np.ndarray | None:
        """``model``'s predicted class for each reference row (prediction drift); None if not a classifier."""
        return None

    def reference_table(self, model: nn.Module) -> tuple[np.ndarray, list[str]]:
        """The reference sample registered with a version: features, plus ``prediction`` when there is one."""
        features, names = self.reference_sample(), list(self.feature_names)
        predictions = self.reference_predictions(model)
        if predictions is None:
            return features, names
        return np.column_stack([features, predictions.astype(features.dtype)]), [*names, "prediction"]

    def probe(self, model: nn.Module, count: int = 32) -> Probe:
        """The probe saved with a model of this task: ``count`` real inputs and the model's outputs on them."""
        return record(model, self.example_input(count), self.output_kind)

    @abstractmethod
    def train_baseline(self, seed: int = 0) -> nn.Module:
        """Train the dense baseline from scratch (for demos and tests)."""


def load_task(import_path: str, tracking_uri: str | None = None) -> Task:
    """Resolve ``package.module:attribute`` (or a ``data:`` spec) to a :class:`Task` instance.

    The module must be trusted (:mod:`pruneops.trust`; a version's ``pruneops.task`` tag is
    written by whoever writes the registry). The attribute must be a Task instance, or a
    Task subclass, which is then built without arguments; nothing else is called.

    A ``data:`` spec (``data:eval.npz#metric=accuracy``) names the built-in data-file task
    instead (:mod:`pruneops.tasks.datafile`): no code is imported at all. Its file is fetched
    from ``tracking_uri`` (default: the process's, :func:`pruneops.settings.tracking_uri`).

    >>> load_task("pruneops.tasks.digits:nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneops.errors.UntrustedCodeError: cannot import 'pruneops.tasks.digits:nope': ...
    """
    if import_path.startswith("data:"):
        from pruneops.tasks.datafile import load_data_task

        return load_data_task(import_path, tracking_uri)
    found = resolve_trusted(import_path, what="import task")
    if isinstance(found, Task):
        return found
    if isinstance(found, type) and issubclass(found, Task):
        return found()
    kind = "class" if isinstance(found, type) else type(found).__name__
    raise UntrustedCodeError(f"refusing task {import_path!r}: it is a {kind}, not a pruneops Task or Task subclass")
