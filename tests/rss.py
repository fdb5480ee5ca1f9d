"""Watch a process's resident memory (``/proc/<pid>/status``) while an attack runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def rss_mb(pid: int) -> float:
    """The process's resident set size now, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssWatch:
    """Samples a process's RSS every ``every`` seconds on a thread; ``peak`` is the largest seen.

    >>> import os
    >>> with RssWatch(os.getpid()) as watch:
    ...     time.sleep(0.05)
    >>> watch.peak >= watch.start > 0
    True
    """

    def __init__(self, pid: int, every: float = 0.005) -> None:
        self.pid, self.every = pid, every
        self.start = self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, RuntimeError):
                return
            time.sleep(self.every)

    @property
    def grew(self) -> float:
        """How far the peak rose above the RSS at the start, in MiB."""
        return self.peak - self.start


def stream(total: int, chunk: int = 1 << 20):  # type: ignore[no-untyped-def]
    """A body generator: ``total`` bytes in ``chunk``-sized pieces (httpx sends it chunked)."""
    sent = 0
    while sent < total:
        size = min(chunk, total - sent)
        sent += size
        yield b"0" * size
