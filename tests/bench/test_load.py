"""The load client: correct HTTP/1.1 framing, bounds, error counting, loopback only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bench.load import ensure_loopback, run_load

Reply = Callable[[dict[str, object]], bytes]
Serve = Callable[[Reply], Awaitable["Server"]]


def content_length(body: dict[str, object]) -> bytes:
    payload = json.dumps({"echo": body["dedup_id"]}).encode()
    return b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)


def chunked(body: dict[str, object]) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\n\r\n"
    )


def closing_conflict(body: dict[str, object]) -> bytes:
    return b"HTTP/1.1 409 Conflict\r\nContent-Length: 4\r\nConnection: close\r\n\r\nheld"


class Server:
    """An HTTP/1.1 server on 127.0.0.1 that records each request body it is sent."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.bodies: list[dict[str, object]] = []
        self.connections = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = json.loads(await reader.readexactly(length))
                self.bodies.append(body)
                response = self.reply(body)
                writer.write(response)
                await writer.drain()
                if b"Connection: close" in response:
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> Server:
        state = Server(reply)
        server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
        state.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return state

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def body(index: int) -> dict[str, object]:
    return {"dedup_id": f"d-{index}"}


async def test_counts_each_request_once_with_unique_bodies(serve: Serve) -> None:
    server = await serve(content_length)
    result = await run_load(
        f"http://127.0.0.1:{server.port}/workflows",
        body,
        concurrency=4,
        max_requests=50,
        max_seconds=30,
        warmup=8,
    )
    assert result.ok == 50
    assert result.requests == 50
    assert dict(result.statuses) == {"202": 50}
    assert len(result.latencies_ms) == 50
    ids = [b["dedup_id"] for b in server.bodies]
    assert len(ids) == 58  # warm-up requests are sent, not counted
    assert len(set(ids)) == 58
    assert server.connections == 4  # keep-alive: one connection per concurrent worker


async def test_reads_chunked_bodies(serve: Serve) -> None:
    server = await serve(chunked)
    result = await run_load(
        f"http://127.0.0.1:{server.port}/", body, concurrency=2, max_requests=6, max_seconds=30
    )
    assert result.ok == 6
    assert result.first_error is None


async def test_counts_refusals_and_reconnects_after_close(serve: Serve) -> None:
    server = await serve(closing_conflict)
    result = await run_load(
        f"http://127.0.0.1:{server.port}/", body, concurrency=1, max_requests=3, max_seconds=30
    )
    assert result.ok == 0
    assert dict(result.statuses) == {"409": 3}
    assert result.first_error == "HTTP 409: held"
    assert server.connections == 3


async def test_a_refused_connection_is_an_error_not_a_crash() -> None:
    result = await run_load(
        "http://127.0.0.1:9/", body, concurrency=1, max_requests=2, max_seconds=30
    )
    assert result.ok == 0
    assert result.requests == 2
    assert result.first_error is not None


@pytest.mark.parametrize("url", ["http://10.0.0.1:80/", "http://example.com/", "http://[::2]/"])
def test_only_loopback_is_targeted(url: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        ensure_loopback(url)


def test_loopback_is_accepted() -> None:
    for url in ("http://127.0.0.1:1/", "http://127.0.0.5/", "http://localhost/", "http://[::1]/"):
        ensure_loopback(url)
