"""The request-body limit shared by the model server and the sidecar.

>>> MAX_BODY_BYTES
8388608
"""

from __future__ import annotations

from typing import Any

MAX_BODY_BYTES = 8 * 1024 * 1024


async def drained_if_oversized(request: Any, limit: int) -> bool:
    """True when the declared body is over ``limit``; the body is then drained.

    The upload is read chunk by chunk and dropped (never held in memory), so the client reads
    the 413 that follows instead of a connection reset.
    """
    length = request.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) <= limit:
        return False
    async for _ in request.stream():
        pass
    return True
