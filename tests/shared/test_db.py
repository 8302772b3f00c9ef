"""Our own PostgreSQL sessions: the settings every caller of services.shared.db gets."""

from __future__ import annotations

import asyncpg

from services.shared.db import connect, create_pool
from services.shared.dsn import asyncpg_dsn


async def test_our_sessions_run_without_jit_and_leave_the_server_default_alone(
    database_url: str,
) -> None:
    plain = await asyncpg.connect(asyncpg_dsn(database_url))
    ours = await connect(database_url, application_name="limbo-test")
    pool = await create_pool(database_url, application_name="limbo-test-pool")
    try:
        # Control: the server's own default is on, so "off" below is our doing.
        assert await plain.fetchval("SHOW jit") == "on"
        assert await ours.fetchval("SHOW jit") == "off"
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW jit") == "off"
            assert await conn.fetchval("SHOW application_name") == "limbo-test-pool"
    finally:
        await pool.close()
        await ours.close()
        await plain.close()
