"""Load generation: N concurrent keep-alive HTTP/1.1 connections, bounded in count and time.

Only loopback addresses are ever targeted. Requests are numbered so that each can carry a
unique deduplication ID; warm-up requests are sent first and not counted.

The client speaks just enough HTTP/1.1 for JSON POSTs (Content-Length or chunked responses)
over asyncio streams. It replaced an httpx.AsyncClient, which cost 2.8 ms of CPU per request
on this machine: as much as the servers under test, on the 2 cores they share. This one costs
a few tens of microseconds, so the client no longer decides the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

Body = Callable[[int], dict[str, Any]]


class HttpError(Exception):
    pass


def ensure_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"load is only ever sent to loopback addresses, not {host!r}")


class Connection:
    """One keep-alive connection; reconnects once if the server closed it between requests."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        reused = self._writer is not None
        try:
            return await self._exchange(head, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            await self.close()
            if not reused:
                raise
            return await self._exchange(head, body)  # the server closed an idle connection

    async def _exchange(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        reader, writer = await self._open()
        writer.write(head + body)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("connection closed before a response")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"bad status line {status_line!r}")
        status = int(parts[1])
        length: int | None = None
        chunked = close = False
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            payload = await self._read_chunked(reader)
        elif length is not None:
            payload = await reader.readexactly(length)
        else:
            payload = await reader.read()
            close = True
        if close:
            await self.close()
        return status, payload

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)


class Client:
    """POSTs JSON to one URL over a pool of `concurrency` connections (one per worker task)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        ensure_loopback(url)
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\n{extra}Content-Length: "
        ).encode()

    def connection(self) -> Connection:
        return Connection(self.host, self.port)

    async def post(self, conn: Connection, payload: dict[str, Any]) -> tuple[int, bytes]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return await conn.request(self._head + f"{len(body)}\r\n\r\n".encode(), body)


@dataclass
class LoadResult:
    requests: int = 0
    ok: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)  # of successful requests
    seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    first_error: str | None = None

    @property
    def rate(self) -> float:
        """Successful requests per second of wall time."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "statuses": dict(self.statuses),
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "client_cpu_seconds": round(self.client_cpu_seconds, 3),
            "first_error": self.first_error,
        }


async def run_load(
    url: str,
    body: Body,
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    warmup: int = 0,
    ok_statuses: tuple[int, ...] = (200, 201, 202),
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """POST `body(i)` to `url` from `concurrency` connections until either bound is reached."""
    client = Client(url, headers)
    result = LoadResult()
    numbers = itertools.count()
    connections = [client.connection() for _ in range(concurrency)]

    async def post(conn: Connection, index: int) -> tuple[int | str, float]:
        started = time.perf_counter()
        try:
            status, payload = await client.post(conn, body(index))
        except (OSError, HttpError, asyncio.IncompleteReadError, ValueError) as exc:
            if result.first_error is None:
                result.first_error = f"{type(exc).__name__}: {exc}"
            return type(exc).__name__, 0.0
        elapsed = (time.perf_counter() - started) * 1000
        if status not in ok_statuses and result.first_error is None:
            result.first_error = f"HTTP {status}: {payload[:300].decode(errors='replace')}"
        return status, elapsed

    async def warm(conn: Connection) -> None:
        while (index := next(numbers)) < warmup:
            await post(conn, index)

    issued = 0
    deadline = 0.0

    async def measure(conn: Connection) -> None:
        nonlocal issued
        while time.monotonic() < deadline and issued < max_requests:
            issued += 1
            status, elapsed = await post(conn, next(numbers))
            result.requests += 1
            result.statuses[str(status)] += 1
            if status in ok_statuses:
                result.ok += 1
                result.latencies_ms.append(elapsed)

    try:
        await asyncio.gather(
            *(warm(conn) for conn in connections[: max(1, min(warmup, concurrency))])
        )
        cpu_before = time.process_time()
        started = time.perf_counter()
        deadline = time.monotonic() + max_seconds
        await asyncio.gather(*(measure(conn) for conn in connections))
        result.seconds = time.perf_counter() - started
        result.client_cpu_seconds = time.process_time() - cpu_before
    finally:
        await asyncio.gather(*(conn.close() for conn in connections))
    return result
