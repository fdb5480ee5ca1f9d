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
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any, Generic, TypeVar, cast

import httptools

# A head still incomplete after MAX_HEAD_BYTES is refused (431) without waiting for its end:
# httptools holds a header line until it ends. The same bound as uvicorn's entry points.
from pruneops.uvicorn_limits import MAX_HEAD_BYTES

log = logging.getLogger(__name__)
T = TypeVar("T")

Headers = list[tuple[bytes, bytes]]  # names lower-cased when parsed, as HTTP/2 and ASGI servers do
# Hop-by-hop headers (RFC 9110 7.6.1) and the framing both sides set for themselves.
HOP_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
     b"content-length", b"host", b"expect"}
)  # fmt: skip
MAX_HEADER_BYTES = 64 * 1024
MAX_PIPELINED = 16  # queued requests per connection before it stops reading
DRAINED_AFTER = 8 * 1024 * 1024  # a burst this large calls on_drained when it is over


def header_fields(headers: Headers) -> dict[bytes, bytes]:
    """Each header name (lower-case) with its first value: one dict built in C, then lookups cost no loop.

    >>> header_fields([(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])[b"a"]
    b'1'
    """
    return dict(reversed(headers))  # inserted last to first: the first value is the one kept


@dataclass(slots=True)
class Request:
    """One request as the server received it; ``body`` is empty when ``oversized``."""

    method: str
    target: bytes  # path and query, as sent
    headers: Headers
    body: bytes | bytearray
    keep_alive: bool = True
    oversized: bool = False  # the body was over the server's limit and was dropped
    fields: dict[bytes, bytes] | None = field(default=None, repr=False, compare=False)  # header()'s index

    @property
    def path(self) -> str:
        """The path without the query.

        >>> Request("GET", b"/v2/models?x=1", [], b"").path
        '/v2/models'
        """
        return self.target.partition(b"?")[0].decode("latin-1")

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None (``headers`` are not changed after a lookup).

        >>> Request("GET", b"/", [(b"accept", b"*/*")], b"").header(b"accept")
        b'*/*'
        """
        fields = self.fields
        if fields is None:
            fields = self.fields = header_fields(self.headers)
        return fields.get(name)


@dataclass(slots=True)
class Reply:
    """A reply to send; Content-Length and Connection are set when it is written."""

    status: int
    headers: Headers
    body: bytes
    fields: dict[bytes, bytes] | None = field(default=None, repr=False, compare=False)  # header()'s index

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None (``headers`` are not changed after a lookup)."""
        fields = self.fields
        if fields is None:
            fields = self.fields = header_fields(self.headers)
        return fields.get(name)


def _handler_failed(request: Request) -> Reply:
    """Log a handler's bug (from within ``except``) and answer 500: one failed request, not a dead connection."""
    log.exception("handler failed for %s %r", request.method, request.target)
    return error_reply(500, "the sidecar failed on this request; see its log")


def _task_reply(request: Request, task: asyncio.Future[Reply]) -> Reply:
    try:
        return task.result()
    except Exception:  # noqa: BLE001 - logged by _handler_failed
        return _handler_failed(request)


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


class Later:
    """A reply that comes later: whoever has it calls :meth:`resolve`, once, on the event loop's thread.

    What a handler returns when it cannot answer at once, lighter than a future: the reply
    goes on in the same call, not through a turn of the event loop.

    >>> later = Later()
    >>> later.then(lambda reply: print(reply.status))
    >>> later.resolve(Reply(200, [], b""))
    200
    """

    __slots__ = ("_callback", "_on_cancel", "reply")

    def __init__(self, on_cancel: Callable[[], object] | None = None) -> None:
        self.reply: Reply | None = None
        self._callback: Callable[[Reply], None] | None = None
        self._on_cancel = on_cancel

    def resolve(self, reply: Reply) -> None:
        """Give the reply; the callback, if one waits, runs now."""
        if self.reply is not None:
            raise RuntimeError("a reply is given once")
        self.reply = reply
        callback, self._callback = self._callback, None
        if callback is not None:
            callback(reply)

    def then(self, callback: Callable[[Reply], None]) -> None:
        """Call ``callback`` with the reply when it is given (now, if it was)."""
        if self.reply is not None:
            callback(self.reply)
        else:
            self._callback = callback

    def cancel(self) -> None:
        """Nobody waits any more: drop the callback (the reply, if given later, goes nowhere)."""
        self._callback = None
        if self._on_cancel is not None:
            self._on_cancel()


_ANSWERS = (Reply, Later)  # what a handler returns when it is not a coroutine

#: Answers one request: with the reply at once, a :class:`Later`, or a coroutine (run as a task).
Handler = Callable[[Request], "Reply | Later | Awaitable[Reply]"]
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


class _Sweep(Generic[T]):
    """One timer for many deadlines: every ``period`` seconds, while anything is watched, ``check`` each item.

    Used for the server's connections (header, body and idle deadlines) and for the upstream
    pool's exchanges (``--timeout``): a timer per connection woke an idle process for each of
    its keep-alive connections, and one armed and cancelled per request cost more than the rest
    of an exchange's bookkeeping. A deadline is noticed within ``period`` of passing.
    """

    def __init__(self, period: float, check: Callable[[T], object]) -> None:
        self.period, self.check = period, check
        self.items: set[T] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, item: T, loop: asyncio.AbstractEventLoop) -> None:
        """Check ``item`` at each sweep until it is forgotten."""
        self.items.add(item)
        if self._timer is None:
            self._timer = loop.call_later(self.period, self._run, loop)

    def forget(self, item: T) -> None:
        """Stop checking ``item``."""
        self.items.discard(item)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        for item in list(self.items):
            self.check(item)
        if self.items:
            self._timer = loop.call_later(self.period, self._run, loop)


@dataclass
class _Shared:
    """State all connections of one server share."""

    limits: ConnectionLimits
    on_refuse: RefuseHook
    on_drained: Callable[[], None] | None = None
    connections: int = 0
    buffered: int = 0
    peak: int = 0  # most bytes buffered since the budget last drained to zero
    sweep: _Sweep[_Connection] = field(init=False)  # the connections' deadlines, at half the shortest

    def __post_init__(self) -> None:
        limits = self.limits
        period = max(0.1, min(limits.header_timeout, limits.body_timeout, limits.idle_timeout) / 2)
        self.sweep = _Sweep(period, _Connection.check_deadline)

    def drained(self) -> None:
        """The bodies buffered fell to zero after a burst of at least :data:`DRAINED_AFTER` bytes."""
        self.peak = 0
        if self.on_drained is not None:
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
        self.answering: Request | None = None  # the request whose reply is awaited
        self.pending: Later | None = None  # that reply, when the handler did not answer at once
        self.closing = False  # answer what is queued, then close; ignore what follows
        self.paused = False
        self.counted = False  # counted in shared.connections
        self.held = 0  # body bytes this connection holds in the shared budget
        self.phase, self.phase_since = _IDLE, 0.0
        # The request being parsed; on_message_begin resets all but the body, which _dispatch hands on.
        self.target, self.header_bytes, self.head_buffered = b"", 0, 0
        self.headers: Headers = []
        self.fields: dict[bytes, bytes] = {}  # the first value of each header name
        self.body = bytearray()
        self.size, self.oversized = 0, False

    # The parser's callbacks below run for every request: their work is written out in place
    # (no helper calls), which on the 2-core machine is a measurable share of the proxy's CPU.

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
        self.shared.sweep.watch(self, self.loop)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True  # answered as a plain request (RFC 9110 allows it); the parser stops here
        except httptools.HttpParserError as err:
            self._final(error_reply(400, f"malformed HTTP request: {err}"))
        if self.phase is _HEADERS and not self.closing:  # a head still incomplete: count what it may hold
            self.head_buffered += len(data)
            if self.head_buffered > MAX_HEAD_BYTES:
                self._final(error_reply(431, f"request headers over {MAX_HEADER_BYTES} bytes"))

    def eof_received(self) -> bool | None:
        if self.answering is None and not self.queue:
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
        self.shared.sweep.forget(self)
        if self.pending is not None:
            self.pending.cancel()  # nobody is left to read the reply

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.target, self.header_bytes, self.head_buffered = b"", 0, 0
        self.headers, self.fields = [], {}
        self.size, self.oversized = 0, False
        self.phase, self.phase_since = _HEADERS, self.loop.time()

    def on_url(self, url: bytes) -> None:
        self.target += url
        self.header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self.headers.append((name, value))
        self.fields.setdefault(name, value)  # the first value of each name, for header()
        self.header_bytes += len(name) + len(value)

    def on_headers_complete(self) -> None:
        if self.closing:
            return
        if self.header_bytes > MAX_HEADER_BYTES:
            self._final(error_reply(431, f"request headers over {MAX_HEADER_BYTES} bytes"))
            return
        self.phase, self.phase_since = _BODY, self.loop.time()
        fields = self.fields
        length = fields.get(b"content-length")
        self.oversized = length is not None and length.isdigit() and int(length) > self.limits.max_body
        expect = fields.get(b"expect")
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
        shared = self.shared
        shared.buffered += len(chunk)
        if shared.buffered > shared.peak:
            shared.peak = shared.buffered

    def on_message_complete(self) -> None:
        if not self.closing:
            self.phase, self.phase_since = _IDLE, self.loop.time()
            self._dispatch(keep_alive=self.parser.should_keep_alive())

    # -- answering
    def _dispatch(self, keep_alive: bool) -> None:
        if not self.target.startswith(b"/"):
            self._final(error_reply(400, "the request target must be a path (origin form)"))
            return
        method = self.parser.get_method().decode("latin-1")
        body, self.body = self.body, bytearray()
        self._enqueue(Request(method, self.target, self.headers, body, keep_alive, self.oversized, self.fields))

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
        if self.answering is None:
            self._answer_next()

    def _answer_next(self) -> None:
        """Answer what is queued, in order, until a reply must be waited for (it goes on in :meth:`_answered`).

        No task per request: a handler that answers at once is written at once, and one that
        returns a :class:`Later` is followed by a callback. A coroutine handler runs as a task.
        """
        while self.queue and self.answering is None:
            item = self.queue.popleft()
            if isinstance(item, Reply):
                self._write(item, keep_alive=False, head_only=False)
                return
            try:
                outcome = self.handler(item)
            except Exception:  # noqa: BLE001 - logged by _handler_failed: one 500, not a dead connection
                outcome = _handler_failed(item)
            if not isinstance(outcome, _ANSWERS):
                outcome = self._run_coroutine(item, outcome)
            if isinstance(outcome, Later):
                if outcome.reply is None:
                    self.answering, self.pending = item, outcome
                    outcome.then(self._answered)
                    return
                outcome = outcome.reply
            self._release(len(item.body))  # its body is no longer held once answered
            if not self._write(outcome, item.keep_alive, item.method == "HEAD"):
                return
        if self.answering is None and self.phase == _IDLE:
            self.phase_since = self.loop.time()  # the idle deadline counts from the last reply

    def _run_coroutine(self, request: Request, outcome: Awaitable[Reply]) -> Later:
        """A coroutine handler's reply, from a task."""
        task = asyncio.ensure_future(outcome, loop=self.loop)
        later = Later(on_cancel=task.cancel)
        task.add_done_callback(lambda done: None if done.cancelled() else later.resolve(_task_reply(request, done)))
        return later

    def _answered(self, reply: Reply) -> None:
        request, self.answering, self.pending = self.answering, None, None
        if request is None:
            return
        self._release(len(request.body))
        if self._write(reply, request.keep_alive, request.method == "HEAD"):
            if self.queue:
                self._answer_next()  # pipelined requests
            elif self.phase == _IDLE:
                self.phase_since = self.loop.time()  # the idle deadline counts from the last reply

    def _write(self, reply: Reply, keep_alive: bool, head_only: bool) -> bool:
        """Send ``reply``; False when the connection is closed or closing after it."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        keep_alive = keep_alive and not (self.closing and not self.queue)
        transport.write(encode_reply(reply, keep_alive, head_only))
        if not keep_alive:
            transport.close()
            return False
        if self.paused and len(self.queue) < MAX_PIPELINED:
            transport.resume_reading()
            self.paused = False
        return True

    def _release(self, count: int) -> None:
        count = min(count, self.held)
        if count:
            self.held -= count
            shared = self.shared
            shared.buffered -= count
            if shared.buffered == 0 and shared.peak >= DRAINED_AFTER:
                shared.drained()

    # -- deadlines: the server's sweep (_Shared.sweep) calls check_deadline at half the shortest
    # deadline (no timer per request or per connection); it checks what the connection waits for.
    def _enter(self, phase: str) -> None:
        self.phase, self.phase_since = phase, self.loop.time()

    def _timeout(self) -> float:
        limits = self.limits
        return {_IDLE: limits.idle_timeout, _HEADERS: limits.header_timeout, _BODY: limits.body_timeout}[self.phase]

    def check_deadline(self) -> None:
        """Close a quiet keep-alive connection, or answer 408 to a request slower than its deadline."""
        if self.transport is None or self.transport.is_closing():
            return
        waited = self.loop.time() - self.phase_since
        if self.answering is not None or waited < self._timeout():
            return  # answering, or still within the deadline
        if self.phase == _IDLE:
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


class _ClosedUnanswered(UpstreamUnreachable):
    """The server closed the connection before any byte of the reply (retried once on a reused one)."""


#: Told the outcome of one forwarded request, once: the reply, or why there is none.
Done = Callable[["Reply | Exception"], None]


@dataclass(slots=True)
class _Exchange:
    """One request on its way upstream: what to send, by when, and who hears the outcome."""

    message: bytes  # the request head
    body: bytes | bytearray
    method: str
    deadline: float  # time.monotonic(): the clock of asyncio's loop.time and of uvloop's call_later
    done: Done
    retried: bool = False


class UpstreamPool:
    """Keep-alive connections to one HTTP/1.1 server, reused across requests, on one event loop.

    Each connection is an asyncio protocol whose reply httptools parses as it arrives, and
    the outcome is a callback (:meth:`forward`), called from the connection's own read: no
    task, future or stream read per request, which on the 2-core development machine cost
    more CPU than the rest of the sidecar's work. :meth:`send` is the same as a coroutine.

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
        self.idle: list[_UpstreamConnection] = []
        # Exchanges under way, their deadlines checked at a quarter of the timeout (at most 1 s):
        # a reply is given up on between ``timeout`` and ``timeout`` plus that period.
        self.sweep: _Sweep[_UpstreamConnection] = _Sweep(max(0.02, min(1.0, timeout / 4)), _check_exchange)
        self._connecting: set[asyncio.Task[None]] = set()

    def forward(self, method: str, target: bytes, headers: Headers, body: bytes | bytearray, done: Done) -> None:
        """Forward one request; ``done`` is called once with the whole reply or the error.

        The errors: TimeoutError past ``timeout`` seconds, UpstreamUnreachable when the server
        cannot be reached, UpstreamInvalidReply when its reply is not valid HTTP/1.1. A reused
        connection that the server closed before answering is retried once on a new one, as
        proxies do. Call it from the event loop's thread.

        >>> async def ask(port: int) -> str:
        ...     outcome = asyncio.get_running_loop().create_future()
        ...     UpstreamPool(f"http://127.0.0.1:{port}", timeout=5).forward("GET", b"/", [], b"", outcome.set_result)
        ...     return type(await outcome).__name__
        >>> import socket
        >>> with socket.socket() as unused:
        ...     unused.bind(("127.0.0.1", 0))
        ...     print(asyncio.run(ask(unused.getsockname()[1])))
        UpstreamUnreachable
        """
        head = [b"%s %s HTTP/1.1" % (method.encode(), target), b"host: " + self.authority]
        head += [name + b": " + value for name, value in headers if name not in HOP_HEADERS]
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            head.append(b"content-length: %d" % len(body))
        message = b"\r\n".join(head) + b"\r\n\r\n"
        self._start(_Exchange(message, body, method, time.monotonic() + self.timeout, done))

    async def send(self, method: str, target: bytes, headers: Headers, body: bytes | bytearray) -> Reply:
        """:meth:`forward` as a coroutine: the reply, or the error raised.

        >>> async def ask(port: int) -> str:
        ...     try:
        ...         await UpstreamPool(f"http://127.0.0.1:{port}", timeout=5).send("GET", b"/", [], b"")
        ...     except UpstreamUnreachable as err:
        ...         return type(err).__name__
        ...     return "answered"
        >>> import socket
        >>> with socket.socket() as unused:
        ...     unused.bind(("127.0.0.1", 0))
        ...     print(asyncio.run(ask(unused.getsockname()[1])))
        UpstreamUnreachable
        """
        outcome: asyncio.Future[Reply | Exception] = asyncio.get_running_loop().create_future()

        def done(result: Reply | Exception) -> None:
            if not outcome.done():  # the caller may have been cancelled; the exchange still ends
                outcome.set_result(result)

        self.forward(method, target, headers, body, done)
        result = await outcome
        if isinstance(result, Exception):
            raise result
        return result

    async def close(self) -> None:
        """Close the idle connections."""
        while self.idle:
            self.idle.pop().close()

    def _start(self, exchange: _Exchange) -> None:
        idle = self.idle
        while idle:
            connection = idle.pop()
            if connection.open and connection.keep_alive and connection.current is None:  # reusable
                connection.exchange(exchange, reused=True)
                return
            connection.close()
        task = asyncio.get_running_loop().create_task(self._connect(exchange))  # rare once warm: a new connection
        self._connecting.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, exchange: _Exchange) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(max(0.0, exchange.deadline - time.monotonic())):
                _transport, connection = await loop.create_connection(
                    lambda: _UpstreamConnection(loop, self), self.host, self.port
                )
        except TimeoutError as err:
            exchange.done(err)
        except OSError as err:
            exchange.done(UpstreamUnreachable(type(err).__name__))
        else:
            connection.exchange(exchange, reused=False)

    def _finished(self, connection: _UpstreamConnection, exchange: _Exchange, outcome: Reply | Exception) -> None:
        """Called by a connection when its exchange ends: keep or close it, retry or tell the caller."""
        self.sweep.items.discard(connection)  # its exchange is over: no deadline to watch
        if connection.open and connection.keep_alive and len(self.idle) < self.max_idle:  # reusable: it is idle
            self.idle.append(connection)
        else:
            connection.close()
        if isinstance(outcome, _ClosedUnanswered) and connection.reused and not exchange.retried:
            exchange.retried = True  # the server closed this idle connection as we reused it
            self._start(exchange)
        else:
            exchange.done(outcome)


class _UpstreamConnection(asyncio.Protocol):
    """One connection to the upstream server: one request at a time, its reply parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: UpstreamPool) -> None:
        self.loop, self.pool, self.max_reply = loop, pool, pool.max_reply
        self.transport: asyncio.Transport | None = None
        self.parser: Any = httptools.HttpResponseParser(self)
        self.current: _Exchange | None = None
        self.outcome: Reply | Exception | None = None  # set while parsing, handed on after the parser returns
        self.open = self.keep_alive = self.reused = False
        self._new_reply()

    def _new_reply(self) -> None:
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.fields: dict[bytes, bytes] = {}
        self.size, self.received = 0, False
        self.status = 0  # set when the reply's head is complete
        self.framed_by_close = False  # no Content-Length and not chunked: the reply ends when the server closes

    def exchange(self, exchange: _Exchange, reused: bool) -> None:
        """Send a request; the pool hears how it ended."""
        assert self.transport is not None and self.current is None
        # The reply's state is fresh: a new connection's, or reset when its last exchange ended (_end).
        self.current, self.reused, self.keep_alive, self.outcome = exchange, reused, False, None
        if len(exchange.body) < 65536:
            self.transport.write(exchange.message + exchange.body)  # one send for the common small request
        else:
            self.transport.write(exchange.message)
            self.transport.write(exchange.body)  # a large body is not copied again
        self.pool.sweep.watch(self, self.loop)

    def close(self) -> None:
        """Close the connection (an exchange still under way fails)."""
        self.open = False
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.open = self.keep_alive = True

    def data_received(self, data: bytes) -> None:
        if self.current is None:
            self.close()  # bytes nobody asked for: the stream can no longer be trusted
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:  # after a whole reply, that reply still counts
            self._record(UpstreamInvalidReply(f"{type(err).__name__}: {err}"))
        except httptools.HttpParserUpgrade:
            self._record(UpstreamInvalidReply("the server switched protocols"))
        self._end()  # here, not inside the parser: the pool may reuse this connection at once

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.outcome is None and self.current is not None:
            if self.framed_by_close and self.status:
                self.outcome = self._reply()
            elif not self.received:
                self.outcome = _ClosedUnanswered("the server closed the connection without answering")
            else:
                self.outcome = UpstreamInvalidReply("the reply was cut short")
        self._end()
        self.parser = _CLOSED_PARSER  # no reference cycle through the parser (see _Connection)

    # -- httptools callbacks: they only record; data_received hands the outcome on
    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.status:  # trailers of a chunked reply come here too: dropped
            name = name.lower()
            self.headers.append((name, value))
            self.fields.setdefault(name, value)  # the first value of each name, for header()

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.headers, self.fields = [], {}
            return  # 100 Continue, 103 Early Hints: the final reply follows (101 raises HttpParserUpgrade)
        self.status = status
        fields = self.fields
        length = fields.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_reply):
            self._record(UpstreamInvalidReply(f"content-length {length!r}"))
        elif self.current is not None and self.current.method == "HEAD":  # no body follows, whatever its length
            self.keep_alive = self.parser.should_keep_alive()
            self._record(self._reply())
            # llhttp cannot be told to skip the body: the next reply gets a fresh parser, and
            # a byte after this head reaches on_body with the outcome already set, which closes.
            self.parser = httptools.HttpResponseParser(self)
        else:
            chunked = fields.get(b"transfer-encoding", b"").lower().endswith(b"chunked")
            self.framed_by_close = length is None and not chunked and status not in (204, 304)

    def on_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.outcome is not None:
            self.keep_alive = False  # bytes after the reply ended: not reused
        elif self.size > self.max_reply:
            self._record(UpstreamInvalidReply(f"reply over {self.max_reply} bytes"))
        else:
            self.chunks.append(chunk)

    def on_message_complete(self) -> None:
        if self.status and self.outcome is None:  # not a 1xx, and not a reply already ended at its head
            self.keep_alive = self.parser.should_keep_alive()
            self.outcome = self._reply()

    # -- ending an exchange
    def _reply(self) -> Reply:
        return Reply(self.status, self.headers, b"".join(self.chunks), self.fields)

    def _record(self, outcome: Reply | Exception) -> None:
        if self.outcome is None:
            self.outcome = outcome
        if isinstance(outcome, Exception):
            self.keep_alive = False

    def _end(self) -> None:
        """Hand the recorded outcome of the exchange under way to the pool, once; a failed one closes the connection."""
        outcome, self.outcome = self.outcome, None
        if outcome is None:
            return  # the reply is not complete yet
        exchange, self.current = self.current, None
        if isinstance(outcome, Exception) or self.framed_by_close:
            self.close()
        self._new_reply()  # an idle connection holds no reply: a large body would stay alive with it
        if exchange is not None:
            self.pool._finished(self, exchange, outcome)

    def time_out(self) -> None:
        """Give up on the exchange under way (its deadline passed): TimeoutError, and the connection closes."""
        self._record(TimeoutError())
        self._end()


def _check_exchange(connection: _UpstreamConnection) -> None:
    """The pool's sweep: time out ``connection``'s exchange if its deadline passed."""
    if connection.current is not None and connection.current.deadline <= time.monotonic():
        connection.time_out()
