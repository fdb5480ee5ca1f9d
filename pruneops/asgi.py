"""Bounded request bodies for every ASGI entry point (model server, trigger, controller).

:class:`BodyLimit` wraps an ASGI app and reads each request body before the app sees it,
counting every byte as it arrives, whether the client declared a Content-Length or streamed
a chunked body. A body over its limit is answered with 413 and never held: what was read is
dropped, and the rest of the upload is read and discarded (up to a bound, then the
connection closes), so the client sees the 413 rather than a reset. All bodies held at once
in one process share a ``budget``; a request that would go over it gets 503 with
``Retry-After``, so memory stays bounded however many clients upload at once.

It is plain ASGI (no framework import), so the webhook receivers cap their bodies *before*
they verify a signature or a token, and the model server needs no per-request HTTP
middleware, which cost a third of its throughput.

>>> import asyncio
>>> async def echo(scope, receive, send):
...     body = (await receive())["body"]
...     await send({"type": "http.response.start", "status": 200, "headers": []})
...     await send({"type": "http.response.body", "body": body})
>>> async def call(app, body):
...     chunks = [{"type": "http.request", "body": body, "more_body": False}]
...     sent = []
...     async def receive():
...         return chunks.pop(0)
...     async def send(message):
...         sent.append(message)
...     await app({"type": "http", "path": "/", "headers": []}, receive, send)
...     return sent[0]["status"]
>>> asyncio.run(call(BodyLimit(echo, limit=4), b"ok")), asyncio.run(call(BodyLimit(echo, limit=4), b"too long"))
(200, 413)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Inference bodies: 8 MiB of V2 JSON is about a million numbers.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: Webhook deliveries (MLflow, Alertmanager) are a few kilobytes; 1 MiB leaves room for many alerts.
WEBHOOK_BODY_BYTES = 1024 * 1024
#: After a 413, at most this many more bytes are read and dropped before the connection closes.
DRAIN_BYTES = 256 * 1024 * 1024


class BodyLimit:
    """ASGI middleware that reads, counts and bounds request bodies; see the module docstring.

    ``limits`` maps path prefixes to their own limits (the first match wins), e.g.
    ``{"/webhooks/": WEBHOOK_BODY_BYTES}``; other paths get ``limit``. ``budget`` bounds the
    bytes held by all requests at once (default: four times the largest limit).
    """

    def __init__(
        self, app: ASGIApp, limit: int, limits: Mapping[str, int] | None = None, budget: int | None = None
    ) -> None:
        self.app, self.limit, self.limits = app, limit, dict(limits or {})
        self.budget = budget if budget is not None else 4 * max([limit, *self.limits.values()])
        self.held = 0  # bytes of bodies being read or in the app now (one event loop: no lock)

    def limit_for(self, path: str) -> int:
        """The body limit of ``path``.

        >>> BodyLimit(None, 10, {"/webhooks/": 2}).limit_for("/webhooks/mlflow")  # type: ignore[arg-type]
        2
        """
        return next((n for prefix, n in self.limits.items() if path.startswith(prefix)), self.limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _drain(receive)
            await _refuse(send, 413, f"request body over {limit} bytes")
            return
        chunks: list[bytes] = []
        size = held = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    chunks.clear()
                    if message.get("more_body", False):
                        await _drain(receive)
                    await _refuse(send, 413, f"request body over {limit} bytes")
                    return
                if self.held + len(chunk) > self.budget:
                    chunks.clear()
                    await _refuse(send, 503, "too many request bodies in flight; retry", retry_after=True)
                    return
                self.held += len(chunk)
                held += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            chunks.clear()
            await self.app(_with_default_content_type(scope, body), _replay(body, receive), send)
        finally:
            self.held -= held


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _with_default_content_type(scope: Scope, body: bytes) -> Scope:
    """V2's default encoding is JSON: a body sent without a content type (``curl -d``) is JSON.

    The binary tensor extension says so with its own header, so those bodies are left alone.
    """
    names = {k.lower() for k, _ in scope.get("headers", [])}
    if not body or b"content-type" in names or b"inference-header-content-length" in names:
        return scope
    return {**scope, "headers": [*scope["headers"], (b"content-type", b"application/json")]}


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the whole body once, then whatever the server says next."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _drain(receive: Receive) -> None:
    """Read and drop up to :data:`DRAIN_BYTES` of the rest of an upload, so the client reads the answer."""
    dropped = 0
    while dropped < DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _refuse(send: Send, status: int, message: str, retry_after: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the upload is not read
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
