"""Just enough HTTP/1.1 for the sidecar's data path: a keep-alive server and a pooled upstream client.

Why not uvicorn + Starlette + aiohttp, as the first sidecar was: on the 2-core development
machine they cost about 1.3 ms of CPU per forwarded request, and that CPU was the whole
latency the sidecar added. This path costs about 0.35 ms (``benchmarks/serving_overhead.py``).
Parsing is httptools (llhttp, the parser of uvicorn and Node.js); only framing and connection
reuse are written here.

Scope, what a reverse proxy of request/response APIs needs:

- requests with a Content-Length or a chunked body, ``Expect: 100-continue``, pipelining
  (answered in order), keep-alive with an idle timeout that also bounds slow uploads;
- replies framed by Content-Length, chunked, or the connection closing; 1xx replies skipped;
- bodies are held whole (both sides are bounded), so no streaming;
- no protocol upgrades (a WebSocket handshake is answered as a plain request, which RFC
  9110 allows, and the connection then closes), no HTTP/2 and no TLS: the sidecar listens on
  the pod's network and forwards over loopback.

>>> Reply(200, [(b"content-type", b"text/plain")], b"ok").header(b"content-type")
b'text/plain'
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any, cast

import httptools

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]  # names lower-cased when parsed, as HTTP/2 and ASGI servers do
# Hop-by-hop headers (RFC 9110 7.6.1) and the framing both sides set for themselves.
HOP_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
     b"content-length", b"host", b"expect"}
)  # fmt: skip
MAX_HEADER_BYTES = 64 * 1024
MAX_PIPELINED = 16  # queued requests per connection before it stops reading
DRAINED_AFTER = 8 * 1024 * 1024  # a burst this large calls on_drained when it is over


def find_header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (both lower-case), or None.

    >>> find_header([(b"content-type", b"application/json")], b"content-type")
    b'application/json'
    """
    for key, value in headers:
        if key == name:
            return value
    return None


@dataclass(slots=True)
class Request:
    """One request as the server received it; ``body`` is empty when ``oversized``."""

    method: str
    target: bytes  # path and query, as sent
    headers: Headers
    body: bytes | bytearray
    keep_alive: bool = True
    oversized: bool = False  # the body was over the server's limit and was dropped

    @property
    def path(self) -> str:
        """The path without the query.

        >>> Request("GET", b"/v2/models?x=1", [], b"").path
        '/v2/models'
        """
        return self.target.partition(b"?")[0].decode("latin-1")

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        return find_header(self.headers, name)


@dataclass(slots=True)
class Reply:
    """A reply to send; Content-Length and Connection are set when it is written."""

    status: int
    headers: Headers
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        return find_header(self.headers, name)


def error_reply(status: int, message: str, retry_after: int | None = None) -> Reply:
    """A JSON ``{"error": message}`` reply, as every error the sidecar makes itself.

    >>> error_reply(503, "busy", retry_after=1).headers[-1]
    (b'retry-after', b'1')
    """
    headers: Headers = [(b"content-type", b"application/json")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    return Reply(status, headers, json.dumps({"error": message}).encode())


#: "HTTP/1.1 200 OK" for every status Python knows, built once (an enum lookup per reply showed in profiles).
_STATUS_LINES = {status.value: b"HTTP/1.1 %d %s" % (status.value, status.phrase.encode()) for status in HTTPStatus}


def encode_reply(reply: Reply, keep_alive: bool, head_only: bool = False) -> bytes:
    """The reply as HTTP/1.1 bytes; a reply to HEAD keeps the upstream's Content-Length and has no body.

    >>> encode_reply(Reply(200, [], b"ok"), keep_alive=False)
    b'HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\nconnection: close\\r\\n\\r\\nok'
    """
    lines = [_STATUS_LINES.get(reply.status) or b"HTTP/1.1 %d Unknown" % reply.status]
    lines += [name + b": " + value for name, value in reply.headers if name not in HOP_HEADERS]
    if head_only:
        length = reply.header(b"content-length")
        if length is not None:
            lines.append(b"content-length: " + length)
    elif reply.status >= 200 and reply.status not in (204, 304):
        lines.append(b"content-length: %d" % len(reply.body))
    if not keep_alive:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else reply.body)


Handler = Callable[[Request], Awaitable[Reply]]
#: Told why a connection or request was refused by the server itself (for metrics).
RefuseHook = Callable[[str], None]


@dataclass
class ConnectionLimits:
    """What one server lets its clients hold: connections, buffered body bytes, and time.

    - ``max_connections``: past it a new connection is answered 503 and closed at once.
    - ``buffer_budget``: request bodies held at once, across all connections, from their first
      byte until their reply is written; a body that would go over it gets 503 and its
      connection closes. With ``max_body`` it bounds what uploads can make the process hold.
    - ``header_timeout``: a request's headers must arrive within this many seconds of its first byte.
    - ``body_timeout``: its body within this many seconds of its headers. Either gets 408.
    - ``idle_timeout``: a keep-alive connection with no request for this long is closed.

    >>> ConnectionLimits().buffer_budget // (1024 * 1024)
    64
    """

    max_body: int = 8 * 1024 * 1024
    max_connections: int = 1024
    buffer_budget: int = 64 * 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 75.0


@dataclass
class _Shared:
    """State all connections of one server share."""

    limits: ConnectionLimits
    on_refuse: RefuseHook
    on_drained: Callable[[], None] | None = None
    connections: int = 0
    buffered: int = 0
    peak: int = 0  # most bytes buffered since the budget last drained to zero

    def hold(self, count: int) -> None:
        self.buffered += count
        self.peak = max(self.peak, self.buffered)

    def release(self, count: int) -> None:
        self.buffered -= count
        if self.buffered == 0 and self.peak >= DRAINED_AFTER and self.on_drained is not None:
            self.peak = 0
            self.on_drained()  # a burst of large bodies is over: give the memory back


async def start_server(
    handler: Handler,
    host: str,
    port: int,
    max_body: int,
    idle_timeout: float = 75.0,
    limits: ConnectionLimits | None = None,
    on_refuse: RefuseHook | None = None,
    on_drained: Callable[[], None] | None = None,
) -> asyncio.base_events.Server:
    """Serve ``handler`` on ``host:port`` until the returned server is closed.

    A body over ``max_body`` is read and dropped, and the handler gets the request with
    ``oversized=True`` (so it decides the 413 and counts it). ``limits`` bounds connections,
    buffered bytes and time (:class:`ConnectionLimits`; its ``max_body`` and ``idle_timeout``
    are replaced by the arguments); ``on_refuse`` hears each refusal's reason, and
    ``on_drained`` is called when the buffered bytes fall back to zero after a burst of at
    least 8 MiB (the sidecar trims its heap there).

    >>> async def ok(request: Request) -> Reply:
    ...     return Reply(200, [], b"ok")
    >>> async def main() -> None:
    ...     server = await start_server(ok, "127.0.0.1", 0, max_body=1024)
    ...     port = server.sockets[0].getsockname()[1]
    ...     reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ...     writer.write(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    ...     print((await reader.readuntil(b"\\r\\n")).decode().strip())
    ...     writer.close()
    ...     server.close()
    >>> asyncio.run(main())
    HTTP/1.1 200 OK
    """
    loop = asyncio.get_running_loop()
    chosen = replace(limits or ConnectionLimits(), max_body=max_body, idle_timeout=idle_timeout)
    shared = _Shared(chosen, on_refuse or (lambda _reason: None), on_drained)
    return await loop.create_server(lambda: _Connection(handler, shared), host, port, reuse_address=True, backlog=1024)


_IDLE, _HEADERS, _BODY = "idle", "headers", "body"  # what a connection is waiting for


class _ClosedParser:
    """Stands in for a closed connection's parser, so the protocol holds no reference cycle."""

    def feed_data(self, _data: bytes) -> None:
        return None


_CLOSED_PARSER: object = _ClosedParser()


class _Connection(asyncio.Protocol):
    """One client connection: parse requests, answer them in order, one at a time."""

    def __init__(self, handler: Handler, shared: _Shared) -> None:
        self.handler, self.shared, self.limits = handler, shared, shared.limits
        # Looked up once: in Python 3.11 each asyncio.get_running_loop() is a getpid() system call.
        self.loop = asyncio.get_running_loop()
        self.parser: Any = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[Request | Reply] = deque()  # a Reply here is a final error, then close
        self.worker: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False  # answer what is queued, then close; ignore what follows
        self.paused = False
        self.counted = False  # counted in shared.connections
        self.held = 0  # body bytes this connection holds in the shared budget
        self.phase, self.phase_since = _IDLE, 0.0
        self._new_message()

    def _new_message(self) -> None:
        self.target, self.header_bytes = b"", 0
        self.headers: Headers = []
        self.body = bytearray()
        self.size, self.oversized = 0, False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.shared.connections >= self.limits.max_connections:
            self.closing = True
            self.shared.on_refuse("connections")
            self.transport.write(encode_reply(error_reply(503, "too many connections; retry", 1), keep_alive=False))
            self.transport.close()
            return
        self.shared.connections += 1
        self.counted = True
        self._enter(_IDLE)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True  # answered as a plain request (RFC 9110 allows it); the parser stops here
        except httptools.HttpParserError as err:
            self._final(error_reply(400, f"malformed HTTP request: {err}"))

    def eof_received(self) -> bool | None:
        if self.worker is None:
            return None  # nothing to answer: close
        self.closing = True  # the client half-closed after sending: answer it, then close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._release(self.held)
        # The parser and this protocol refer to each other: without this, a closed connection
        # and whatever it buffered wait for the cyclic collector, which an idle proxy may not
        # run for a long time (30 stalled uploads left 40 MiB behind).
        self.parser = _CLOSED_PARSER
        self.body, self.headers = bytearray(), []
        self.queue.clear()
        if self.counted:
            self.shared.connections -= 1
            self.counted = False
        if self.timer is not None:
            self.timer.cancel()
        if self.worker is not None:
            self.worker.cancel()  # nobody is left to read the reply

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self._new_message()
        self._enter(_HEADERS)

    def on_url(self, url: bytes) -> None:
        self.target += url
        self.header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self.header_bytes += len(name) + len(value)

    def on_headers_complete(self) -> None:
        if self.closing:
            return
        if self.header_bytes > MAX_HEADER_BYTES:
            self._final(error_reply(431, f"request headers over {MAX_HEADER_BYTES} bytes"))
            return
        self._enter(_BODY)
        length = find_header(self.headers, b"content-length")
        self.oversized = length is not None and length.isdigit() and int(length) > self.limits.max_body
        expect = find_header(self.headers, b"expect")
        if expect is not None and expect.lower() == b"100-continue":
            if self.oversized:  # refuse now rather than take the upload; the rest is never read
                self._dispatch(keep_alive=False)
                self.closing = True
            else:
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self.closing:
            return
        self.size += len(chunk)
        if self.oversized:
            return  # drained, never held: the client reads the 413, not a reset
        if self.size > self.limits.max_body:
            self.oversized = True
            self._release(len(self.body))
            self.body = bytearray()
            return
        if self.shared.buffered + len(chunk) > self.limits.buffer_budget:
            self._release(len(self.body))
            self.body = bytearray()
            self.shared.on_refuse("buffer_budget")
            self._final(error_reply(503, "too many request bodies in flight; retry", retry_after=1))
            return
        self.body += chunk
        self.held += len(chunk)
        self.shared.hold(len(chunk))

    def on_message_complete(self) -> None:
        if not self.closing:
            self._enter(_IDLE)
            self._dispatch(keep_alive=self.parser.should_keep_alive())

    # -- answering
    def _dispatch(self, keep_alive: bool) -> None:
        if not self.target.startswith(b"/"):
            self._final(error_reply(400, "the request target must be a path (origin form)"))
            return
        method = self.parser.get_method().decode("latin-1")
        body, self.body = self.body, bytearray()
        self._enqueue(Request(method, self.target, self.headers, body, keep_alive, self.oversized))

    def _final(self, reply: Reply) -> None:
        """Answer ``reply`` after what is queued, then close: the stream can no longer be trusted."""
        self._enqueue(reply)
        self.closing = True

    def _enqueue(self, item: Request | Reply) -> None:
        assert self.transport is not None
        self.queue.append(item)
        if len(self.queue) >= MAX_PIPELINED and not self.paused:
            self.transport.pause_reading()
            self.paused = True
        if self.worker is None:
            self.worker = self.loop.create_task(self._answer())

    async def _answer(self) -> None:
        transport = self.transport
        assert transport is not None
        try:
            while self.queue:
                item = self.queue.popleft()
                if isinstance(item, Reply):
                    reply, keep_alive, head_only = item, False, False
                else:
                    reply, keep_alive, head_only = await self._handle(item), item.keep_alive, item.method == "HEAD"
                    self._release(len(item.body))  # its body is no longer held once answered
                if transport.is_closing():
                    return
                keep_alive = keep_alive and not (self.closing and not self.queue)
                transport.write(encode_reply(reply, keep_alive, head_only))
                if not keep_alive:
                    transport.close()
                    return
                if self.paused and len(self.queue) < MAX_PIPELINED:
                    transport.resume_reading()
                    self.paused = False
        finally:
            self.worker = None
            if self.phase == _IDLE:
                self.phase_since = self.loop.time()

    async def _handle(self, request: Request) -> Reply:
        try:
            return await self.handler(request)
        except Exception:  # a bug in a handler is one 500, not a dead connection
            log.exception("handler failed for %s %r", request.method, request.target)
            return error_reply(500, "the sidecar failed on this request; see its log")

    def _release(self, count: int) -> None:
        count = min(count, self.held)
        if count:
            self.held -= count
            self.shared.release(count)

    # -- deadlines: one timer per connection, ticking at half the shortest deadline (no timer per
    # request on the hot path); each tick checks the deadline of what the connection waits for.
    def _enter(self, phase: str) -> None:
        self.phase, self.phase_since = phase, self.loop.time()

    def _arm_timer(self) -> None:
        limits = self.limits
        period = max(0.1, min(limits.header_timeout, limits.body_timeout, limits.idle_timeout) / 2)
        self.timer = self.loop.call_later(period, self._tick)

    def _timeout(self) -> float:
        limits = self.limits
        return {_IDLE: limits.idle_timeout, _HEADERS: limits.header_timeout, _BODY: limits.body_timeout}[self.phase]

    def _tick(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        waited = self.loop.time() - self.phase_since
        if self.worker is not None or waited < self._timeout():
            self._arm_timer()  # answering, or still within the deadline
        elif self.phase == _IDLE:
            self.transport.close()  # a quiet keep-alive connection
        else:
            reason = "header_timeout" if self.phase == _HEADERS else "body_timeout"
            self.shared.on_refuse(reason)
            self._release(len(self.body))
            self.body = bytearray()
            self._final(error_reply(408, f"the request's {self.phase} did not arrive within {self._timeout():g}s"))


class UpstreamError(Exception):
    """The upstream server failed to answer."""


class UpstreamUnreachable(UpstreamError):
    """No connection, or the server closed it without answering."""


class UpstreamInvalidReply(UpstreamError):
    """The server's reply is not valid HTTP/1.1, is cut short, or is over the size limit."""


class UpstreamPool:
    """Keep-alive connections to one HTTP/1.1 server, reused across requests.

    >>> UpstreamPool("http://127.0.0.1:8080", timeout=5).authority
    b'127.0.0.1:8080'
    """

    def __init__(self, url: str, timeout: float, max_idle: int = 64, max_reply: int = 64 * 1024 * 1024) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream {url!r}: use http://HOST:PORT (the sidecar forwards over loopback, no TLS)")
        self.host, self.port = parts.hostname, parts.port or 80
        self.authority = parts.netloc.encode()
        self.timeout, self.max_idle, self.max_reply = timeout, max_idle, max_reply
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def send(self, method: str, target: bytes, headers: Headers, body: bytes | bytearray) -> Reply:
        """Forward one request and return the whole reply.

        Raises TimeoutError past ``timeout`` seconds, UpstreamUnreachable when the server
        cannot be reached, and UpstreamInvalidReply when its reply is not valid HTTP/1.1.
        A reused connection that the server closed before answering is retried once on a
        new one, as proxies do.
        """
        head = [b"%s %s HTTP/1.1" % (method.encode(), target), b"host: " + self.authority]
        head += [name + b": " + value for name, value in headers if name not in HOP_HEADERS]
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            head.append(b"content-length: %d" % len(body))
        head_bytes = b"\r\n".join(head) + b"\r\n\r\n"
        async with asyncio.timeout(self.timeout):
            while True:
                (reader, writer), reused = await self._connection()
                try:
                    if len(body) < 65536:
                        writer.write(head_bytes + body)  # one send for the common small request
                    else:
                        writer.write(head_bytes)
                        writer.write(body)  # a large body is not copied again
                    try:
                        first = await reader.readuntil(b"\r\n\r\n")
                    except (ConnectionError, asyncio.IncompleteReadError) as err:
                        if reused and not getattr(err, "partial", b""):
                            writer.close()
                            continue  # the server closed this idle connection as we reused it
                        raise UpstreamUnreachable(type(err).__name__) from err
                    reply, keep_alive = await self._rest_of_reply(reader, method, first)
                except UpstreamUnreachable:
                    writer.close()
                    raise
                except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as err:
                    writer.close()
                    raise UpstreamInvalidReply(f"{type(err).__name__}: {err}") from err
                except BaseException:  # timeout or cancellation: the connection is mid-reply
                    writer.close()
                    raise
                if keep_alive and len(self.idle) < self.max_idle:
                    self.idle.append((reader, writer))
                else:
                    writer.close()
                return reply

    async def close(self) -> None:
        """Close the idle connections."""
        while self.idle:
            self.idle.pop()[1].close()

    async def _connection(self) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], bool]:
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return (reader, writer), True
            writer.close()
        try:
            return await asyncio.open_connection(self.host, self.port), False
        except OSError as err:
            raise UpstreamUnreachable(type(err).__name__) from err

    async def _rest_of_reply(self, reader: asyncio.StreamReader, method: str, head: bytes) -> tuple[Reply, bool]:
        version, status, headers = _parse_head(head)
        while 100 <= status < 200:  # 100 Continue, 103 Early Hints: the final reply follows
            if status == 101:
                raise ValueError("the server switched protocols")
            version, status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
        connection = (find_header(headers, b"connection") or b"").lower()
        keep_alive = connection != b"close" if version == b"HTTP/1.1" else connection == b"keep-alive"
        length = find_header(headers, b"content-length")
        encoding = (find_header(headers, b"transfer-encoding") or b"").lower()
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif encoding.endswith(b"chunked"):
            body = await self._chunked(reader)
        elif length is not None:
            if not length.isdigit() or int(length) > self.max_reply:
                raise ValueError(f"content-length {length!r}")
            body = await reader.readexactly(int(length))
        else:  # framed by the connection closing
            body, keep_alive = await self._until_eof(reader), False
        return Reply(status, headers, body), keep_alive

    async def _chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
            if len(body) + size > self.max_reply:
                raise ValueError(f"reply over {self.max_reply} bytes")
            body += (await reader.readexactly(size + 2))[:-2]
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass  # trailers, dropped
        return bytes(body)

    async def _until_eof(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while chunk := await reader.read(65536):
            body += chunk
            if len(body) > self.max_reply:
                raise ValueError(f"reply over {self.max_reply} bytes")
        return bytes(body)


def _parse_head(head: bytes) -> tuple[bytes, int, Headers]:
    """Status line and headers of a reply head (ending in a blank line)."""
    lines = head[:-4].split(b"\r\n")
    version, status, *_ = lines[0].split(b" ", 2)
    if not version.startswith(b"HTTP/1.") or not status.isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: Headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"malformed header line: {line[:80]!r}")
        headers.append((name.strip().lower(), value.strip()))
    return version, int(status), headers
