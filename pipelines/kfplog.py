"""A local run's KFP output in a log file, and one event per step for the console.

``kfp.local`` prints every step's executor input, streamed output and outputs to stdout
(hundreds of lines for one run) and warns about the image once per step. :func:`kfp_output_to`
sends all of that to a file instead, without colour codes, and calls ``on_step`` when a step
starts and when it ends, read from the log records ``kfp.local`` writes ("Executing task
'prune'", "Task 'prune' finished with status SUCCESS").

>>> events = []
>>> watcher = StepWatcher(events.append, clock=iter([1.0, 3.5]).__next__)
>>> for message in ["Executing task \\x1b[96m'prune'\\x1b[0m",
...                 "Task \\x1b[96m'prune'\\x1b[0m finished with status \\x1b[92mSUCCESS\\x1b[0m"]:
...     _ = watcher.filter(logging.makeLogRecord({"msg": message}))
>>> [(e.step, e.status, e.seconds) for e in events]
[('prune', 'started', None), ('prune', 'SUCCESS', 2.5)]
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STARTED = re.compile(r"Executing task '([^']+)'")
FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")


@dataclass(frozen=True)
class StepEvent:
    """A step started (``status == "started"``) or ended (``SUCCESS``/``FAILURE``, with its duration)."""

    step: str
    status: str
    seconds: float | None = None


class StepWatcher(logging.Filter):
    """Reads step starts and ends out of ``kfp.local``'s log records; lets every record through.

    A filter on the root logger, not a handler: ``kfp.local`` replaces the root logger's
    handlers for each step, and leaves its filters alone.
    """

    def __init__(self, on_step: Callable[[StepEvent], None], clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self._on_step, self._clock = on_step, clock
        self._started: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = ANSI.sub("", record.getMessage())
        if started := STARTED.match(message):
            self._started[started[1]] = self._clock()
            self._on_step(StepEvent(started[1], "started"))
        elif finished := FINISHED.match(message):
            began = self._started.pop(finished[1], None)
            seconds = self._clock() - began if began is not None else None
            self._on_step(StepEvent(finished[1], finished[2], seconds))
        return True


class _Plain:
    """A text file that drops terminal colour codes as they are written."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def write(self, text: str) -> int:
        return self._file.write(ANSI.sub("", text))

    def flush(self) -> None:
        self._file.flush()


@contextlib.contextmanager
def kfp_output_to(log_path: Path, on_step: Callable[[StepEvent], None] | None = None) -> Iterator[None]:
    """Within the block, stdout and stderr (KFP's logs, its warnings, every step's output)
    go to ``log_path``, and ``on_step`` hears each step start and end.

    Whatever should reach the person (``on_step``'s lines) must write to a stream bound
    before the block: ``sys.stdout`` inside it is the log file.

    >>> import tempfile
    >>> log = Path(tempfile.mkdtemp()) / "kfp.log"
    >>> heard = []
    >>> with kfp_output_to(log, on_step=heard.append):
    ...     print("\\x1b[32mstep output\\x1b[0m")  # colour codes dropped
    ...     logging.getLogger().warning("Executing task 'prune'")  # kfp.local logs on the root logger
    ...     logging.getLogger().warning("Task 'prune' finished with status SUCCESS")
    >>> log.read_text().splitlines()[0]
    'step output'
    >>> [(event.step, event.status) for event in heard]
    [('prune', 'started'), ('prune', 'SUCCESS')]
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    watcher = StepWatcher(on_step) if on_step else None
    with log_path.open("a", encoding="utf-8") as file:
        plain = _Plain(file)
        if watcher:
            root.addFilter(watcher)
        try:
            with contextlib.redirect_stdout(plain), contextlib.redirect_stderr(plain):
                yield
        finally:
            if watcher:
                root.removeFilter(watcher)
