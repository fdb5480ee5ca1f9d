"""The sidecar's HTTP/1.1 plumbing over real sockets: framing, pipelining, limits, connection reuse."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from pruneops.serving import http1
from pruneops.serving.http1 import (
    Later,
    Reply,
    Request,
    UpstreamInvalidReply,
    UpstreamPool,
    UpstreamUnreachable,
    start_server,
)
from tests.conftest import free_port

pytestmark = pytest.mark.integration


async def echo(request: Request) -> Reply:
    """Answers with what it got; ``/slow`` first waits, so pipelined replies would overtake it."""
    if request.path == "/slow":
        await asyncio.sleep(0.2)
    body = b"%s %s %d %s" % (request.method.encode(), request.target, len(request.body), b"big" * request.oversized)
    return Reply(200, [(b"content-type", b"text/plain"), (b"x-got", request.header(b"x-test") or b"-")], body)


async def read_reply(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Status line and body of one Content-Length reply."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line[15:]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return head.split(b"\r\n")[0], await reader.readexactly(length)


def with_server(
    scenario: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], **options: float
) -> None:
    """Run ``scenario`` against ``echo`` served by ``start_server`` on a fresh connection."""

    async def main() -> None:
        server = await start_server(echo, "127.0.0.1", 0, max_body=int(options.pop("max_body", 1000)), **options)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            await asyncio.wait_for(scenario(reader, writer), timeout=10)
        finally:
            writer.close()
            server.close()

    asyncio.run(main())


def test_pipelined_requests_are_answered_in_order() -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast?q=1 HTTP/1.1\r\nHost: x\r\nX-Test: 2\r\n\r\n")
        assert (await read_reply(reader))[1] == b"GET /slow 0 "
        assert (await read_reply(reader))[1] == b"GET /fast?q=1 0 "

    with_server(scenario)


def test_chunked_body_reaches_the_handler_whole() -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        assert await read_reply(reader) == (b"HTTP/1.1 200 OK", b"POST /in 11 ")

    with_server(scenario)


def test_expect_100_continue() -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"body")
        assert await read_reply(reader) == (b"HTTP/1.1 200 OK", b"POST /in 4 ")

    with_server(scenario)


def test_oversized_upload_with_expect_is_refused_before_it_is_sent() -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        line, body = await read_reply(reader)
        assert line == b"HTTP/1.1 200 OK" and body == b"POST /in 0 big"  # the handler decides; no 100 sent
        assert await reader.read() == b""  # and the connection closes: the upload is never read

    with_server(scenario)


def test_oversized_body_is_drained_and_the_connection_kept() -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"0" * 5000)
        assert (await read_reply(reader))[1] == b"POST /in 0 big"
        writer.write(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_reply(reader))[1] == b"GET /next 0 "

    with_server(scenario)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
        (b"GET http://elsewhere/ HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
    ],
)
def test_bad_requests_get_an_error_then_close(request_bytes: bytes, status: bytes) -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(request_bytes)
        line, body = await read_reply(reader)
        assert line.split(b" ")[1] == status and body.startswith(b'{"error": ')
        assert await reader.read() == b""

    with_server(scenario)


def test_an_endless_header_line_is_refused_before_it_ends() -> None:
    """httptools holds a header line until its end: the server refuses one that never ends (memory bound)."""

    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        reply = asyncio.ensure_future(read_reply(reader))
        sent = 0
        with contextlib.suppress(ConnectionError):
            while not reply.done() and sent < 16 * 1024 * 1024:  # never a line end
                writer.write(b"a" * 65536)
                sent += 65536
                await writer.drain()
                await asyncio.sleep(0.01)  # the server reads each chunk before the next
        line, body = await reply
        assert line.split(b" ")[1] == b"431" and body.startswith(b'{"error": ')
        assert sent <= http1.MAX_HEAD_BYTES + 1024 * 1024  # refused early, not at the line's end

    with_server(scenario)


def test_upgrade_is_answered_as_a_plain_request_then_closed() -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        assert await read_reply(reader) == (b"HTTP/1.1 200 OK", b"GET /ws 0 ")
        assert await reader.read() == b""

    with_server(scenario)


def test_connection_close_and_http10_close_after_the_reply() -> None:
    for request in (b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"GET /a HTTP/1.0\r\n\r\n"):

        async def scenario(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes = request
        ) -> None:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"connection: close" in head
            assert await reader.read() == b"GET /a 0 "

        with_server(scenario)


def test_idle_connections_are_closed() -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_reply(reader)
        started = asyncio.get_running_loop().time()
        assert await reader.read() == b""
        assert 0.2 < asyncio.get_running_loop().time() - started < 3

    with_server(scenario, idle_timeout=0.3)


# -- the upstream side


def upstream_test(
    respond: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    send: Callable[[UpstreamPool], Awaitable[None]],
    timeout: float = 5.0,
) -> None:
    """Serve ``respond`` on a raw socket server and run ``send`` with a pool pointed at it."""

    async def main() -> None:
        server = await asyncio.start_server(respond, "127.0.0.1", 0)
        pool = UpstreamPool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", timeout=timeout)
        try:
            await send(pool)
        finally:
            await pool.close()
            server.close()

    asyncio.run(main())


def canned(
    *replies: bytes, close: bool = False
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A server that answers each request on a connection with the next of ``replies``."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in replies:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line[15:]) for line in head.split(b"\r\n") if line.startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            writer.write(reply)
            await writer.drain()
        if close:
            writer.close()

    return respond


def test_reply_framings() -> None:
    replies = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-V: 3\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nT: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",  # to a HEAD: no body follows
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]

    async def send(pool: UpstreamPool) -> None:
        chunked = await pool.send("POST", b"/a", [(b"x-test", b"1")], b"{}")
        assert (chunked.status, chunked.body, chunked.header(b"x-v")) == (200, b"abcde", b"3")
        assert (await pool.send("POST", b"/b", [], b"{}")).body == b"ok"
        head = await pool.send("HEAD", b"/c", [], b"")
        assert (head.status, head.body, head.header(b"content-length")) == (200, b"", b"99")
        assert (await pool.send("DELETE", b"/d", [], b"")).status == 204
        assert len(pool.idle) == 1  # one connection carried all four

    upstream_test(canned(*replies), send)


def test_reply_framed_by_close() -> None:
    async def send(pool: UpstreamPool) -> None:
        reply = await pool.send("GET", b"/", [], b"")
        assert reply.body == b"until the end" and not pool.idle

    upstream_test(canned(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", close=True), send)


def test_a_closed_idle_connection_is_replaced() -> None:
    """The server drops keep-alive connections after each reply without saying so."""
    connections = 0

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await canned(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % connections, close=True)(reader, writer)

    async def send(pool: UpstreamPool) -> None:
        for expected in (b"1", b"2", b"3"):
            assert (await pool.send("GET", b"/", [], b"")).body == expected

    upstream_test(respond, send)
    assert connections == 3


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
def test_invalid_replies_raise(reply: bytes) -> None:
    async def send(pool: UpstreamPool) -> None:
        with pytest.raises(UpstreamInvalidReply):
            await pool.send("GET", b"/", [], b"")
        assert not pool.idle

    upstream_test(canned(reply, close=True), send)


def test_unreachable_and_timeout() -> None:
    async def main() -> None:
        with pytest.raises(UpstreamUnreachable, match="ConnectionRefused"):
            await UpstreamPool(f"http://127.0.0.1:{free_port()}", timeout=5).send("GET", b"/", [], b"")

    asyncio.run(main())

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def send(pool: UpstreamPool) -> None:
        with pytest.raises(TimeoutError):
            await pool.send("GET", b"/", [], b"")
        assert not pool.idle  # a connection left mid-reply is never reused

    upstream_test(silent, send, timeout=0.2)


def test_upstream_url_must_be_plain_http() -> None:
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        UpstreamPool("https://model:8443", timeout=1)


def test_timeout_is_given_within_the_sweep_period() -> None:
    """Deadlines are checked by one sweep per pool (a quarter of the timeout), not a timer per request."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def send(pool: UpstreamPool) -> None:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(pool.send("GET", b"/", [], b"") for _ in range(3)), return_exceptions=True)
        waited = asyncio.get_running_loop().time() - started
        assert all(isinstance(result, TimeoutError) for result in results)
        assert 0.4 <= waited < 0.4 + 0.1 + 0.2  # the timeout, at most one sweep period (0.1 s), scheduling slack
        assert not pool.sweep.items and not pool.idle

    upstream_test(silent, send, timeout=0.4)


def test_forward_calls_back_once_with_the_reply() -> None:
    async def send(pool: UpstreamPool) -> None:
        outcomes: list[Reply | Exception] = []
        done = asyncio.Event()

        def record(outcome: Reply | Exception) -> None:
            outcomes.append(outcome)
            done.set()

        pool.forward("POST", b"/a", [(b"content-type", b"application/json")], b"{}", record)
        await done.wait()
        await asyncio.sleep(0.05)  # nothing more arrives
        assert len(outcomes) == 1 and isinstance(outcomes[0], Reply) and outcomes[0].body == b"ok"
        assert len(pool.idle) == 1

    upstream_test(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), send)


def test_an_idle_connection_holds_no_reply() -> None:
    """The pool keeps connections, not what they carried: a large reply is freed once handed on."""

    async def send(pool: UpstreamPool) -> None:
        reply = await pool.send("GET", b"/", [], b"")
        assert len(reply.body) == 1_000_000 and len(pool.idle) == 1
        idle = pool.idle[0]
        assert (idle.chunks, idle.headers, idle.size) == ([], [], 0)

    upstream_test(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1_000_000), send)


def test_bytes_after_a_reply_are_not_trusted() -> None:
    """A server that sends more than its reply (here after a HEAD reply's head) loses the connection."""

    async def send(pool: UpstreamPool) -> None:
        head = await pool.send("HEAD", b"/", [], b"")
        assert (head.status, head.body) == (200, b"")
        assert not pool.idle  # the stray body was seen: the connection is not reused

    upstream_test(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"), send)


def test_a_reply_given_later_is_written_in_order() -> None:
    """A handler may return a Later and resolve it from a callback; pipelined replies keep their order."""

    def later_handler(request: Request) -> Reply | Later:
        if request.path != "/later":
            return Reply(200, [], b"now")
        later = Later()
        asyncio.get_running_loop().call_later(0.1, later.resolve, Reply(200, [], b"later"))
        return later

    async def main() -> None:
        server = await start_server(later_handler, "127.0.0.1", 0, max_body=100)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\nGET /now HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_reply(reader))[1] == b"later"
        assert (await read_reply(reader))[1] == b"now"
        writer.close()
        server.close()

    asyncio.run(main())


def test_a_lost_client_cancels_what_it_waited_for() -> None:
    cancelled = asyncio.Event()

    def waits_forever(request: Request) -> Later:
        return Later(on_cancel=cancelled.set)

    async def main() -> None:
        server = await start_server(waits_forever, "127.0.0.1", 0, max_body=100)
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.05)
        # A reset, not a half-close: after a FIN the client may still read its reply, so it is still waited for.
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        await asyncio.wait_for(cancelled.wait(), timeout=5)
        server.close()

    asyncio.run(main())


def test_one_sweep_closes_many_idle_connections() -> None:
    """Idle deadlines of every connection are checked by the server's one sweep."""

    async def main() -> None:
        server = await start_server(echo, "127.0.0.1", 0, max_body=100, idle_timeout=0.3)
        port = server.sockets[0].getsockname()[1]
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        for reader, _writer in clients:
            assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # closed by the server
        server.close()

    asyncio.run(main())
