"""The floor for a Python proxy hop: forwards bytes, measures nothing (benchmark only, never served).

``benchmarks/serving_overhead.py`` runs it beside the sidecar, so a figure can say how much
of the sidecar's added latency is the extra loopback hop through any Python process on this
machine, and how much is the sidecar's own work (parsing, metrics, sampling). It handles
only what the benchmark sends: Content-Length framing, keep-alive, one upstream connection
per client connection.

Run: ``python benchmarks/bare_proxy.py http://127.0.0.1:8080 8082``.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.parse

import uvloop


def content_length(head: bytes) -> int:
    """The Content-Length of a message head, 0 when absent.

    >>> content_length(b"HTTP/1.1 200 OK\\r\\nContent-Length: 12\\r\\n\\r\\n")
    12
    """
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            return int(line[15:])
    return 0


async def forward(upstream: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Relay each request on this connection to its own upstream connection, and the reply back."""
    up_reader, up_writer = await asyncio.open_connection(*upstream)
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            up_writer.write(head + await reader.readexactly(content_length(head)))
            reply = await up_reader.readuntil(b"\r\n\r\n")
            writer.write(reply + await up_reader.readexactly(content_length(reply)))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        up_writer.close()
        writer.close()


async def main(upstream_url: str, port: int) -> None:
    parts = urllib.parse.urlsplit(upstream_url)
    upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
    server = await asyncio.start_server(lambda r, w: forward(upstream, r, w), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
