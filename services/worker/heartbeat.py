"""The worker's heartbeat: a thread of its own, with its own event loop and connection.

It never shares the service's event loop, so a slow request or a busy workflow can never
make a live worker look dead. Times are the database's (`now()`), so the supervisor
compares them without trusting any host clock.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg
import structlog

from services.shared.db import connect
from services.shared.dsn import redact
from services.shared.schema import SCHEMA
from services.worker.metrics import HEARTBEAT_AGE, HEARTBEAT_FAILURES

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ExecutorIdentity:
    executor_id: str
    application_name: str
    application_version: str
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    incarnation: uuid.UUID = field(default_factory=uuid.uuid4)


class Heartbeat(threading.Thread):
    """Registers this executor, publishes its workflow registry, then beats until stopped."""

    def __init__(
        self,
        database_url: str,
        identity: ExecutorIdentity,
        registry: Mapping[str, int | None],
        interval: float,
    ) -> None:
        super().__init__(name="limbo-heartbeat", daemon=True)
        self._url = database_url
        self.identity = identity
        self._registry = dict(registry)
        self._interval = interval
        self._stop_requested = threading.Event()
        self._mark_stopped = False
        self.registered = threading.Event()
        self._last_beat: float | None = None
        HEARTBEAT_AGE.set_function(self.age)

    def age(self) -> float:
        """Seconds since the last successful beat (infinite before the first)."""
        last = self._last_beat
        return float("inf") if last is None else time.monotonic() - last

    def stop(self, *, mark_stopped: bool, timeout: float = 5.0) -> None:
        """Stop beating; with mark_stopped, record a graceful stop first."""
        self._mark_stopped = mark_stopped
        self._stop_requested.set()
        self.join(timeout)

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        conn: asyncpg.Connection | None = None
        while not self._stop_requested.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await connect(
                        self._url, application_name="limbo-worker-heartbeat", timeout=5.0
                    )
                    await self._register(conn)
                else:
                    await self._beat(conn)
                self._last_beat = time.monotonic()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                HEARTBEAT_FAILURES.inc()
                log.warning("heartbeat_failed", error=redact(str(exc)), retry_in=self._interval)
                if conn is not None:
                    conn.terminate()
                    conn = None
            # Retried at the beat's own pace, never slower: after a database outage every
            # worker must be seen alive again well within the supervisor's executor timeout.
            await self._sleep(self._interval)
        if conn is not None:
            if self._mark_stopped:
                try:
                    await self._mark_stop(conn)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("heartbeat_stop_not_recorded", error=str(exc))
            await conn.close()

    async def _sleep(self, seconds: float) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._stop_requested.wait, seconds)

    async def _register(self, conn: asyncpg.Connection) -> None:
        ident = self.identity
        async with conn.transaction():
            await conn.execute(
                f"""
                INSERT INTO {SCHEMA}.executors AS e (executor_id, application_name,
                    application_version, hostname, pid, incarnation, started_at, last_seen_at)
                VALUES ($1, $2, $3, $4, $5, $6, now(), now())
                ON CONFLICT (executor_id) DO UPDATE SET
                    application_name = excluded.application_name,
                    application_version = excluded.application_version,
                    hostname = excluded.hostname, pid = excluded.pid,
                    incarnation = excluded.incarnation,
                    started_at = CASE WHEN e.incarnation = excluded.incarnation
                                      THEN e.started_at ELSE now() END,
                    last_seen_at = now(), stopped_at = NULL
                """,
                ident.executor_id,
                ident.application_name,
                ident.application_version,
                ident.hostname,
                ident.pid,
                ident.incarnation,
            )
            await conn.executemany(
                f"""
                INSERT INTO {SCHEMA}.workflow_registry (application_name, application_version,
                    workflow_name, max_recovery_attempts, published_by, published_at)
                VALUES ($1, $2, $3, $4, $5, now())
                ON CONFLICT (application_name, application_version, workflow_name) DO UPDATE SET
                    max_recovery_attempts = excluded.max_recovery_attempts,
                    published_by = excluded.published_by, published_at = now()
                """,
                [
                    (
                        ident.application_name,
                        ident.application_version,
                        name,
                        attempts,
                        ident.executor_id,
                    )
                    for name, attempts in self._registry.items()
                ],
            )
        if not self.registered.is_set():
            log.info(
                "executor_registered",
                application_version=ident.application_version,
                workflows=self._registry,
            )
        self.registered.set()

    async def _beat(self, conn: asyncpg.Connection) -> None:
        status = await conn.execute(
            f"""UPDATE {SCHEMA}.executors SET last_seen_at = now(), stopped_at = NULL
                WHERE executor_id = $1 AND incarnation = $2""",
            self.identity.executor_id,
            self.identity.incarnation,
        )
        if status == "UPDATE 0":
            # Another process registered under our executor ID: a misconfiguration that
            # would make two processes share one identity. Re-register and say so loudly.
            log.error("executor_id_taken_over", executor_id=self.identity.executor_id)
            await self._register(conn)

    async def _mark_stop(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            f"""UPDATE {SCHEMA}.executors SET stopped_at = now(), last_seen_at = now()
                WHERE executor_id = $1 AND incarnation = $2""",
            self.identity.executor_id,
            self.identity.incarnation,
        )
        log.info("executor_stopped_recorded")
