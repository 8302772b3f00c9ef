"""One active supervisor per DBOS system database: a session advisory lock on a dedicated
connection. The lock lives exactly as long as that connection, so when the leader dies (or its
connection does) PostgreSQL releases it and a standby takes it on its next poll."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from services.shared.db import connect

log = structlog.get_logger("limbo.supervisor.leadership")
LOCK_NAME = "limbo.supervisor.leader"


class Leadership:
    def __init__(self, url: str, *, lock_name: str = LOCK_NAME, timeout: float = 5.0) -> None:
        self.url = url
        self.lock_name = lock_name
        self.timeout = timeout
        self._conn: asyncpg.Connection | None = None
        self._leader = False

    @property
    def is_leader(self) -> bool:
        return self._leader and self._conn is not None and not self._conn.is_closed()

    @property
    def role(self) -> str:
        return "leader" if self.is_leader else "standby"

    @property
    def backend_pid(self) -> int | None:
        """The server PID of the lock connection (pg_locks names the leader by it)."""
        conn = self._conn
        return None if conn is None or conn.is_closed() else conn.get_server_pid()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._leader = False
            self._conn = await connect(
                self.url, application_name="limbo-supervisor-leader", timeout=self.timeout
            )
        return self._conn

    async def refresh(self) -> bool:
        """Confirm leadership (the lock connection still answers) or try to take it."""
        try:
            conn = await self._connection()
            if self._leader:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), self.timeout)
            else:
                acquired = await asyncio.wait_for(
                    conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", self.lock_name),
                    self.timeout,
                )
                if acquired:
                    self._leader = True
                    log.info("leadership_acquired", role="leader")
        except BaseException:
            was_leader = self._leader
            await self._drop()
            if was_leader:
                log.warning("leadership_lost", role="standby")
            raise
        return self._leader

    async def _drop(self) -> None:
        self._leader = False
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def release(self) -> None:
        """Give leadership up (graceful shutdown): a standby takes over at once."""
        conn, was_leader = self._conn, self._leader
        self._leader = False
        self._conn = None
        if conn is not None and not conn.is_closed():
            if was_leader:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        conn.fetchval("SELECT pg_advisory_unlock(hashtext($1))", self.lock_name),
                        2.0,
                    )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)
            if not conn.is_closed():
                conn.terminate()
