"""An exclusive lock between processes on one machine, held through a lock file.

>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "state.lock"
>>> with file_lock(path):
...     path.exists()
True
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    Not re-entrant: a second ``file_lock`` of the same path in the same process waits forever.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp, file_lock(Path(tmp) / "registry.lock"):
    ...     (Path(tmp) / "registry.lock").exists()
    True
    """
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
