"""What memory and time a client can make the serving pod hold, measured on the real processes.

Each test sends the attack and watches the process's RSS (``/proc/<pid>/status``) while it
runs. The bounds: the model server grows by less than 40 MiB whatever one client uploads (8
MiB is the body limit); the sidecar by less than its 64 MiB body budget plus 40 MiB, and it
gives the memory back once the uploads are gone.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, stop_process, wait_http
from tests.rss import RssWatch, rss_mb, stream
from tests.serving.conftest import Stack, start_cli
from tests.serving.test_serving import scrape, served_version

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
JSON = {"content-type": "application/json"}


def test_server_counts_chunked_bodies_against_the_limit(stack: Stack) -> None:
    with RssWatch(stack.server_pid) as watch:
        reply = httpx.post(f"{stack.server}/v2/models/digits/infer", content=stream(100 * MIB), headers=JSON,
                           timeout=120)  # fmt: skip
    assert reply.status_code == 413 and "over 8388608 bytes" in reply.json()["error"]
    assert watch.grew < 40, f"a 100 MiB chunked body grew the server by {watch.grew:.0f} MiB"
    assert served_version(stack.server) == stack.versions["baseline"]


def endless_header_line(url: str, limit: int = 50 * MIB) -> tuple[int, bytes]:
    """Send a request head whose last header line never ends, until the peer refuses it or
    ``limit`` bytes went out; the bytes sent and the start of what came back."""
    host, port = url.removeprefix("http://").split(":")
    sent, reply = 0, b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sock.setblocking(False)
        with contextlib.suppress(ConnectionError):
            while sent < limit and not reply:
                with contextlib.suppress(BlockingIOError):
                    reply = sock.recv(200)
                    if not reply:
                        break  # closed without a reply
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(b"a" * 65536)
                time.sleep(0.002)
    return sent, reply


@pytest.mark.parametrize("process", ["server", "sidecar"])
def test_an_endless_header_line_is_refused_early(stack: Stack, process: str) -> None:
    """httptools holds a header line until it ends: both processes refuse a head past 320 KiB."""
    with RssWatch(getattr(stack, f"{process}_pid")) as watch:
        sent, reply = endless_header_line(getattr(stack, process))
    assert sent < 8 * MIB, f"{process} read {sent / MIB:.0f} MiB of one header line without refusing it"
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431"), reply  # 431, or the reset that can overtake it
    assert watch.grew < 24, f"an endless header line grew the {process} by {watch.grew:.0f} MiB"


def test_server_webhook_body_is_capped_before_its_signature_is_checked(stack: Stack) -> None:
    with RssWatch(stack.server_pid) as watch:
        reply = httpx.post(f"{stack.server}/webhooks/mlflow", content=stream(50 * MIB), headers=JSON, timeout=120)
    assert reply.status_code == 413 and "over 1048576 bytes" in reply.json()["error"]
    assert watch.grew < 40, f"a 50 MiB webhook body grew the server by {watch.grew:.0f} MiB"


@pytest.fixture
def tight_sidecar(stack: Stack, tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """A sidecar with short deadlines and a small connection cap: (url, port, pid)."""
    port = free_port()
    process = start_cli(["sidecar", "--upstream", stack.server, "--port", str(port), "--drift-interval", "0",
                         "--header-timeout", "2", "--body-timeout", "3", "--max-connections", "100"],
                        stack.env, tmp_path / "sidecar.log")  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/metrics", timeout=60, process=process)
        yield url, port, process.pid
    finally:
        stop_process(process)


def rejected(url: str, reason: str) -> float:
    return scrape(url).get(("pruneops_requests_rejected_total", frozenset({("reason", reason)})), 0.0)


def test_stalled_uploads_are_bounded_and_the_memory_given_back(tight_sidecar: tuple[str, int, int]) -> None:
    url, port, pid = tight_sidecar
    before = rss_mb(pid)
    head = b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\n\r\n" % int(7.5 * MIB)
    uploads = []
    with RssWatch(pid) as watch:
        for _ in range(30):  # each sends 7 of its 7.5 MiB, then stalls
            upload = socket.create_connection(("127.0.0.1", port), timeout=10)
            with contextlib.suppress(OSError):  # refused mid-upload: the sidecar answered 503 and closed
                upload.sendall(head + b"0" * (7 * MIB))
            uploads.append(upload)
        time.sleep(1.0)
    assert watch.grew < 64 + 40, f"30 stalled 7.5 MiB uploads grew the sidecar by {watch.grew:.0f} MiB"
    assert rejected(url, "buffer_budget") >= 15  # 64 MiB holds 9 of the 7 MiB uploads; the rest are refused
    time.sleep(3.5)  # past the body deadline: the ones still held are answered 408 and dropped
    answers = []
    for upload in uploads:
        try:
            answers.append(upload.recv(64).split(b" ")[1])
        except (OSError, IndexError):
            answers.append(b"closed")
        upload.close()
    assert set(answers) <= {b"408", b"503", b"closed"} and b"408" in answers
    assert rejected(url, "body_timeout") >= 1
    time.sleep(1.0)
    assert rss_mb(pid) - before < 24, f"the sidecar kept {rss_mb(pid) - before:.0f} MiB after the uploads ended"
    assert httpx.get(url + "/v2/health/ready", timeout=10).status_code == 200


def test_slow_headers_are_cut_off(tight_sidecar: tuple[str, int, int]) -> None:
    url, port, _pid = tight_sidecar
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    started = time.monotonic()
    answer = slow.recv(1024)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5
    assert slow.recv(1024) == b""  # closed
    assert rejected(url, "header_timeout") >= 1


def test_connections_past_the_cap_are_refused(tight_sidecar: tuple[str, int, int]) -> None:
    url, port, _pid = tight_sidecar
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(100)]
    try:
        time.sleep(0.5)
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert extra.recv(1024).startswith(b"HTTP/1.1 503")
        extra.close()
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.5)
    assert rejected(url, "connections") >= 1  # scraped once the held connections are gone
    assert httpx.get(url + "/v2/health/live", timeout=10).status_code == 200
