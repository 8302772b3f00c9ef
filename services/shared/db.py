"""asyncpg connections with the timeouts every caller of ours wants."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec

from services.shared.dsn import asyncpg_dsn

# Our queries are short index reads and guarded writes: PostgreSQL's JIT, which switches on
# by cost estimate alone, spent 25 ms compiling the sweep's PENDING read at 1M rows (10 ms
# to run). Off for our own sessions only; the server's setting is left alone.
SESSION_SETTINGS = {"jit": "off"}


def _encode_json(value: Any) -> str:
    # msgspec: several times faster than json.dumps on the supervisor's audit evidence.
    return msgspec.json.encode(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("jsonb", "json"):
        await conn.set_type_codec(
            kind, encoder=_encode_json, decoder=msgspec.json.decode, schema="pg_catalog"
        )


async def connect(
    url: str, *, application_name: str, timeout: float = 5.0, **settings: str
) -> asyncpg.Connection:
    conn = await asyncpg.connect(
        asyncpg_dsn(url),
        timeout=timeout,
        command_timeout=30,
        server_settings={"application_name": application_name, **SESSION_SETTINGS, **settings},
    )
    await _init_connection(conn)
    return conn


async def create_pool(
    url: str, *, application_name: str, min_size: int = 1, max_size: int = 5, timeout: float = 5.0
) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        asyncpg_dsn(url),
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        command_timeout=30,
        init=_init_connection,
        server_settings={"application_name": application_name, **SESSION_SETTINGS},
    )
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool, timeout: float) -> None:
    """Raise unless the database answers a trivial query within `timeout` seconds."""

    async def _query() -> Any:
        async with pool.acquire(timeout=timeout) as conn:
            return await conn.fetchval("SELECT 1", timeout=timeout)

    await asyncio.wait_for(_query(), timeout)
