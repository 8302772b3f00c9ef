"""The service loop: connect, adapt to the DBOS schema, hold or wait for leadership, sweep.

A database outage never ends the loop: the supervisor reports not ready, retries with
exponential backoff, and resumes. Only a DBOS schema it cannot support is fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import asyncpg
import structlog

from services.shared.db import connect, create_pool
from services.shared.dsn import redact
from services.shared.schema import migrate
from services.supervisor import metrics
from services.supervisor.dbos_schema import (
    DbosSchema,
    IncompatibleSchema,
    SchemaNotReady,
    inspect_schema,
)
from services.supervisor.leadership import Leadership
from services.supervisor.settings import Settings
from services.supervisor.sweeper import Supervisor

log = structlog.get_logger("limbo.supervisor")
MAX_BACKOFF_S = 30.0
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


async def prepare(settings: Settings, application_name: str) -> DbosSchema:
    """Our migrations, then the DBOS schema read and checked (one short connection)."""
    conn = await connect(settings.database_url, application_name=application_name)
    try:
        await migrate(conn)
        return await inspect_schema(conn, settings.dbos_schema)
    finally:
        await conn.close()


class Runner:
    def __init__(self, settings: Settings, on_fatal: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.leadership = Leadership(settings.database_url)
        self.supervisor: Supervisor | None = None
        self.ready = False
        self.not_ready_reason: str | None = "starting"
        self.fatal: str | None = None
        self.stop_event = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._on_fatal = on_fatal
        self.sweeps = 0
        # When our current connection to the database was made (monotonic seconds).
        self._connected_since: float | None = None

    @property
    def role(self) -> str:
        return self.leadership.role

    async def _ensure(self) -> Supervisor:
        if self.supervisor is not None:
            return self.supervisor
        schema = await prepare(self.settings, "limbo-supervisor")
        self._pool = await create_pool(
            self.settings.database_url, application_name="limbo-supervisor", max_size=4
        )
        self.supervisor = Supervisor(self._pool, schema, self.settings)
        self._connected_since = time.monotonic()
        metrics.BUILD.info({"version": metrics.package_version(), "dbos_schema": schema.flavor})
        log.info("dbos schema adapted", **schema.describe())
        return self.supervisor

    async def _reset(self) -> None:
        pool, self._pool, self.supervisor = self._pool, None, None
        self._connected_since = None
        if pool is not None:
            pool.terminate()

    async def step(self) -> bool:
        """One poll: connect if needed, refresh leadership, sweep if leader. True when the
        sweep left candidates for the next one."""
        supervisor = await self._ensure()
        leader = await self.leadership.refresh()
        metrics.LEADER.set(1 if leader else 0)
        if leader:
            report = await supervisor.sweep(
                still_leader=lambda: self.leadership.is_leader,
                repeat_dry_runs=False,
                trust_heartbeats=self.heartbeats_trusted(),
            )
            self.sweeps += 1
            # A full batch left work behind: sweep again at once rather than after a poll.
            return report.deferred > 0 or report.truncated
        return False

    def heartbeats_trusted(self) -> bool:
        """Whether a stale heartbeat can mean a dead executor yet.

        After a database outage every heartbeat is stale at once, because no worker could
        write one: executors are judged only once we have been connected for a full
        executor timeout, time enough for live workers to beat again.
        """
        if self._connected_since is None:
            return False
        timeout_s = self.settings.rules.executor_timeout_ms / 1000
        return time.monotonic() - self._connected_since >= timeout_s

    async def run(self) -> None:
        backoff = self.settings.poll_interval
        while not self.stop_event.is_set():
            delay = self.settings.poll_interval
            try:
                if await self.step():
                    delay = 0.0
                if not self.ready:
                    log.info("ready", role=self.role)
                self.ready, self.not_ready_reason = True, None
                backoff = self.settings.poll_interval
            except IncompatibleSchema as exc:
                self.ready, self.not_ready_reason, self.fatal = False, str(exc), str(exc)
                log.error("incompatible dbos schema: refusing to run", error=str(exc))
                if self._on_fatal is not None:
                    self._on_fatal(str(exc))
                return
            except SchemaNotReady as exc:
                self.ready, self.not_ready_reason = False, str(exc)
                log.warning("waiting for the dbos schema", error=str(exc))
                delay = backoff = min(backoff * 2, MAX_BACKOFF_S)
            except DATABASE_ERRORS as exc:
                metrics.DB_ERRORS.inc()
                metrics.LEADER.set(0)
                reason = redact(f"{type(exc).__name__}: {exc}")
                self.ready, self.not_ready_reason = False, f"database unavailable: {reason}"
                log.warning("database unavailable", error=reason, retry_in_s=backoff)
                await self._reset()
                delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF_S)
            except Exception as exc:  # a bug must not stop the supervisor: log, retry
                metrics.DB_ERRORS.inc()
                self.ready, self.not_ready_reason = False, f"internal error: {exc!r}"
                log.exception("sweep failed")
                delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), delay)

    async def close(self) -> None:
        self.stop_event.set()
        await self.leadership.release()
        metrics.LEADER.set(0)
        await self._reset()
