"""The sampled-traffic window drift is computed over, and how sidecars ship its rows.

:class:`SampleWindow` holds the most recent input and output rows. ``SAMPLES_PATH`` and
``TOKEN_ENV`` are the drift service's endpoint and token variable, named here because both
the sidecar's shipper and the service use them and the sidecar must not import the service
(pandas, Evidently).

Filled by the sidecar (its own drift worker) or by the drift service (rows from every
sidecar); read by :class:`pruneops.monitoring.drift.DriftWorker`. Numpy only, so the sidecar
imports it without the monitoring extra.

>>> import numpy as np
>>> window = SampleWindow(max_rows=2)
>>> window.add(np.ones((3, 4)), None), window.added, window.snapshot()[0].shape
(3, 3, (2, 4))
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

#: The drift service's endpoint for sampled rows, and the variable holding its bearer token.
SAMPLES_PATH = "/v1/samples"
TOKEN_ENV = "PRUNEOPS_DRIFT_TOKEN"


@dataclass
class SampleWindow:
    """The most recent sampled input and output rows, bounded to ``max_rows`` each."""

    max_rows: int = 5000
    added: int = field(default=0, init=False)  # rows ever added, so a reader can tell what is new
    inputs: deque[np.ndarray] = field(init=False)
    outputs: deque[np.ndarray] = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.inputs, self.outputs = deque(maxlen=self.max_rows), deque(maxlen=self.max_rows)

    def add(self, inputs: np.ndarray, outputs: np.ndarray | None) -> int:
        """Append one row per batch item (flattened); returns the rows added."""
        with self.lock:
            self.added += len(inputs)
            _append_rows(self.inputs, inputs)
            if outputs is not None:
                _append_rows(self.outputs, outputs)
        return len(inputs)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the window as 2-D arrays (empty when nothing was sampled)."""
        with self.lock:
            ins = np.stack(list(self.inputs)) if self.inputs else np.empty((0, 0), np.float32)
            outs = np.stack(list(self.outputs)) if self.outputs else np.empty((0, 0), np.float32)
        return ins, outs


def _append_rows(window: deque[np.ndarray], batch: np.ndarray) -> None:
    """Append each batch item of ``batch`` to ``window`` as a flat float32 row.

    Rows are taken by index: iterating a numpy array ends in an IndexError that numpy formats
    a message for, which cost more than the rest of sampling a small request.

    >>> window: deque[np.ndarray] = deque()
    >>> _append_rows(window, np.ones((2, 2, 2)))
    >>> [row.shape for row in window]
    [(4,), (4,)]
    """
    rows = batch.reshape(len(batch), -1).astype(np.float32, copy=False)
    for index in range(len(rows)):
        window.append(rows[index])
