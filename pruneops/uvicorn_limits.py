"""uvicorn's httptools protocol with a bound on request heads, for every uvicorn entry point.

uvicorn bounds an incomplete request head only on its h11 protocol
(``h11_max_incomplete_event_size``); on httptools, which it picks when installed, it holds
a header line until the line ends and every header until the head ends, so one client
sending an endless header line grows the process by whatever it sends (the model server
read all 50 MiB one client sent in a few seconds; ``tests/serving/test_memory_bounds.py``).
:func:`http_protocol` gives uvicorn a protocol that counts the bytes a request head may hold
as they arrive and answers 431, then closes, once they pass :data:`MAX_HEAD_BYTES`, before
any ASGI app runs. The model server, the trigger, the controller and the drift service pass
it as uvicorn's ``http``.

>>> protocol = http_protocol()
>>> protocol if isinstance(protocol, str) else protocol.__name__
'HeadLimitedHttpTools'
"""

from __future__ import annotations

import asyncio
import functools

#: A head still incomplete after this many bytes is refused, here and by the sidecar
#: (``serving/http1.py``): 64 KiB of headers (the sidecar's limit on a complete head) plus one
#: 256 KiB read, the most a chunk can add that belongs to earlier requests.
MAX_HEAD_BYTES = 64 * 1024 + 256 * 1024

_REFUSAL = b"request headers too large"
_REPLY_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_REFUSAL), _REFUSAL)
)


@functools.cache
def http_protocol() -> type[asyncio.Protocol] | str:
    """uvicorn's ``http`` setting: its httptools protocol with the head bound, or ``"h11"`` without httptools.

    Without httptools uvicorn runs h11, which bounds incomplete heads itself (16 KiB by default).

    >>> http_protocol() in ("h11", http_protocol())
    True
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "h11"

    class HeadLimitedHttpTools(HttpToolsProtocol):
        """uvicorn's httptools protocol, answering 431 to a request head past :data:`MAX_HEAD_BYTES`."""

        _in_head = False  # between a request's first byte and the end of its headers
        _head_bytes = 0  # bytes received while in the head (over-counts by at most one read)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes = True, 0

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self.logger.warning("request head over %d bytes from %s: refused", MAX_HEAD_BYTES, self.client)
                    self.transport.write(_REPLY_431)
                    self.transport.close()

    return HeadLimitedHttpTools
