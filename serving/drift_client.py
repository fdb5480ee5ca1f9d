"""The sidecar's side of the drift service: sampled rows sent in batches, off the request path.

``pruneops sidecar --drift-service URL`` gives the sidecar a :class:`DriftShipper` as its sample
sink instead of its own window and drift worker. Rows wait in a bounded buffer (oldest dropped
first, and counted) and a background thread posts them every ``interval`` seconds, or once
``batch_rows`` are waiting, with the service's bearer token. A service that is down or slow
costs the sidecar nothing but the dropped rows: requests never wait on it.

>>> import numpy as np
>>> shipper = DriftShipper("http://127.0.0.1:9", token="t", max_rows=4)
>>> labels = ("digits", "3", "champion")
>>> shipper.add(labels, np.zeros((3, 2)), None), shipper.add(labels, np.ones((3, 2)), None)
(3, 3)
>>> shipper.waiting, shipper.dropped
(4, 2)
>>> shipper.flush()  # nothing listens on port 9: the batch is dropped, not retried forever
0
>>> shipper.waiting, shipper.dropped
(0, 6)
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily

from pruneops.monitoring.window import SAMPLES_PATH

log = logging.getLogger("pruneops.serving.drift")


class DriftShipper:
    """A bounded buffer of sampled rows and the thread that posts them to the drift service."""

    def __init__(
        self, url: str, token: str, interval: float = 5.0, batch_rows: int = 500, max_rows: int = 5000,
        timeout: float = 5.0,
    ) -> None:  # fmt: skip
        self.url = url.rstrip("/") + SAMPLES_PATH
        self.token, self.interval, self.batch_rows, self.max_rows, self.timeout = (
            token, interval, batch_rows, max_rows, timeout)  # fmt: skip
        self._pending: deque[tuple[tuple[str, str, str], np.ndarray, np.ndarray | None]] = deque()
        self.waiting = 0  # rows buffered
        self.dropped = 0  # rows dropped: buffer full, or the service refused or was unreachable
        self.sent = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()

    def add(self, labels: tuple[str, str, str], inputs: np.ndarray, outputs: np.ndarray | None) -> int:
        """The sidecar's sink: keep the rows for the next batch; returns the rows taken."""
        rows = inputs.reshape(len(inputs), -1).astype(np.float32, copy=False)
        outs = outputs.reshape(len(outputs), -1).astype(np.float32, copy=False) if outputs is not None else None
        with self._lock:
            self._pending.append((labels, rows, outs))
            self.waiting += len(rows)
            while self.waiting > self.max_rows and self._pending:
                _labels, old, _outs = self._pending.popleft()
                overflow = self.waiting - self.max_rows
                if len(old) > overflow:  # keep the newest rows of the oldest batch
                    self._pending.appendleft((_labels, old[overflow:], _outs[overflow:] if _outs is not None else None))
                    self.waiting -= overflow
                    self.dropped += overflow
                else:
                    self.waiting -= len(old)
                    self.dropped += len(old)
            if self.waiting >= self.batch_rows:
                self._wake.set()
        return len(rows)

    def flush(self) -> int:
        """Post what is waiting now; returns the rows the service took (0 when it could not be reached)."""
        with self._lock:
            batch, self._pending, rows = list(self._pending), deque(), self.waiting
            self.waiting = 0
        if not batch:
            return 0
        body = json.dumps({"samples": [
            {"model": m, "version": v, "alias": a, "inputs": ins.tolist(),
             "outputs": outs.tolist() if outs is not None and len(outs) == len(ins) else None}
            for (m, v, a), ins, outs in batch
        ]}).encode()  # fmt: skip
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "content-type": "application/json", "authorization": f"Bearer {self.token}"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                taken = int(json.loads(reply.read()).get("rows", 0))
        except (urllib.error.URLError, OSError, ValueError) as err:
            log.warning("drift service at %s did not take %d rows: %s", self.url, rows, err)
            taken = 0
        with self._lock:  # add() counts drops from the sampling threads
            self.sent += taken
            self.dropped += rows - taken
        return taken

    def start(self) -> threading.Thread:
        """Post in a daemon thread until :meth:`stop`."""

        def loop() -> None:
            while not self._stop.is_set():
                self._wake.wait(self.interval)
                self._wake.clear()
                self.flush()

        thread = threading.Thread(target=loop, name="drift-shipper", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def export_shipper(shipper: DriftShipper, registry: CollectorRegistry) -> None:
    """Export the shipper's row counts with the sidecar's metrics (read when scraped).

    >>> from prometheus_client import generate_latest
    >>> registry = CollectorRegistry()
    >>> export_shipper(DriftShipper("http://127.0.0.1:9", token="t"), registry)
    >>> b"pruneops_drift_rows_dropped_total 0.0" in generate_latest(registry)
    True
    """

    class Collector:
        def collect(self) -> Iterator[CounterMetricFamily]:
            for name, value in (("sent", shipper.sent), ("dropped", shipper.dropped)):
                yield CounterMetricFamily(f"pruneops_drift_rows_{name}", f"Sampled rows {name} to the drift service.",
                                          value=value)  # fmt: skip

    registry.register(Collector())
