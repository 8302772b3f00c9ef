"""The supervisor's service loop: connect, adapt to the DBOS schema, hold or wait for
leadership, and as leader probe executors' liveness and sweep.

A database outage never ends the loop: the supervisor reports not ready, retries with
exponential backoff, and resumes. Only a DBOS schema it cannot support is fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable

import asyncpg
import structlog

from limbo import migrate_contract
from services.shared.db import connect, create_pool
from services.shared.dsn import redact
from services.supervisor import metrics
from services.supervisor.leadership import Leadership
from services.supervisor.model.schema import DbosSchema
from services.supervisor.operating import Operator
from services.supervisor.settings import Settings
from services.supervisor.store import history as history_store
from services.supervisor.store import supervisors as supervisor_store
from services.supervisor.store.audit import migrate_audit
from services.supervisor.store.dbos_schema import (
    IncompatibleSchema,
    SchemaNotReady,
    inspect_schema,
)
from services.supervisor.sweeping import SweepReport

log = structlog.get_logger("limbo.supervisor")
MAX_BACKOFF_S = 30.0
# Every supervisor writes its heartbeat (limbo.supervisors) this often (or once a poll, if
# polls are further apart); the leader samples its candidates (the console's chart) this often.
BEAT_INTERVAL_S = 1.0
SAMPLE_INTERVAL_S = 5.0
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


async def prepare(settings: Settings, application_name: str) -> DbosSchema:
    """Our migrations (the liveness contract, the audit trail), then the DBOS schema read
    and checked, on one short connection."""
    conn = await connect(settings.database_url, application_name=application_name)
    try:
        await migrate_contract(conn)
        await migrate_audit(conn)
        return await inspect_schema(conn, settings.dbos_schema)
    finally:
        await conn.close()


class Service:
    def __init__(self, settings: Settings, on_fatal: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.leadership = Leadership(settings.database_url)
        self.operator: Operator | None = None
        self.ready = False
        self.not_ready_reason: str | None = "starting"
        self.fatal: str | None = None
        self.stop_event = asyncio.Event()
        self.sweeps = 0
        self._pool: asyncpg.Pool | None = None
        self._on_fatal = on_fatal
        self._next_sweep = 0.0
        self._next_leadership_check = 0.0
        self._next_beat = 0.0
        self._next_sample = 0.0
        # This process in limbo.supervisors (the console lists leader and standbys).
        self.instance = str(uuid.uuid4())

    @property
    def role(self) -> str:
        return self.leadership.role

    async def _ensure(self) -> Operator:
        if self.operator is not None:
            return self.operator
        schema = await prepare(self.settings, "limbo-supervisor")
        self._pool = await create_pool(
            self.settings.database_url, application_name="limbo-supervisor", max_size=4
        )
        self.operator = Operator(self._pool, schema, self.settings)
        metrics.BUILD.info({"version": metrics.package_version(), "dbos_schema": schema.flavor})
        log.info("dbos_schema_adapted", **schema.describe())
        return self.operator

    async def _reset(self) -> None:
        pool, self._pool, self.operator = self._pool, None, None
        if pool is not None:
            pool.terminate()

    async def step(self) -> float:
        """One turn: connect if needed, refresh leadership, and as leader probe liveness and
        sweep when due or when an executor died. Returns the seconds until the next turn."""
        operator = await self._ensure()
        now = time.monotonic()
        settings = self.settings
        if now >= self._next_leadership_check or self.leadership.is_leader:
            leader = await self.leadership.refresh()
            metrics.LEADER.set(1 if leader else 0)
            self._next_leadership_check = now + settings.poll_interval
            await self._beat(operator, now)
            if not leader:
                return settings.poll_interval
        died = await operator.sweeper.probe()
        if died or now >= self._next_sweep:
            report = await operator.sweeper.sweep(
                should_continue=lambda: self.leadership.is_leader, repeat_dry_runs=False
            )
            self.sweeps += 1
            if now >= self._next_sample:
                await self._sample(operator, report)
                self._next_sample = now + SAMPLE_INTERVAL_S
            # A full batch left work behind: sweep again at once rather than after a poll.
            self._next_sweep = time.monotonic() + (
                0.0 if report.left_work else settings.poll_interval
            )
        return max(0.0, min(settings.liveness_poll_interval, self._next_sweep - time.monotonic()))

    @property
    def beat_interval(self) -> float:
        # A standby turns once a poll: it cannot beat more often than that.
        return max(BEAT_INTERVAL_S, self.settings.poll_interval)

    async def _beat(self, operator: Operator, now: float) -> None:
        if now < self._next_beat:
            return
        self._next_beat = now + self.beat_interval
        async with operator.pool.acquire() as conn:
            await supervisor_store.beat(
                conn,
                instance=self.instance,
                actor=self.settings.actor,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                version=metrics.package_version(),
                dry_run=self.settings.dry_run,
                role=self.role,
                lock_backend_pid=self.leadership.backend_pid,
                beat_ms=round(self.beat_interval * 1000),
            )

    async def _sample(self, operator: Operator, report: SweepReport) -> None:
        by_rule: dict[str, int] = {}
        for verdict in report.candidates:
            by_rule[verdict.rule] = by_rule.get(verdict.rule, 0) + 1
        oldest = min((v.workflow.last_progress_ms for v in report.candidates), default=None)
        async with operator.pool.acquire() as conn:
            await history_store.record(conn, len(report.candidates), by_rule, oldest)

    async def run(self) -> None:
        backoff = self.settings.poll_interval
        while not self.stop_event.is_set():
            try:
                delay = await self.step()
                if not self.ready:
                    log.info("ready", role=self.role)
                self.ready, self.not_ready_reason = True, None
                backoff = self.settings.poll_interval
            except IncompatibleSchema as exc:
                self.ready, self.not_ready_reason, self.fatal = False, str(exc), str(exc)
                log.error("incompatible_dbos_schema", error=str(exc))
                if self._on_fatal is not None:
                    self._on_fatal(str(exc))
                return
            except SchemaNotReady as exc:
                self.ready, self.not_ready_reason = False, str(exc)
                log.warning("waiting_for_dbos_schema", error=str(exc))
                delay = backoff = min(backoff * 2, MAX_BACKOFF_S)
            except DATABASE_ERRORS as exc:
                metrics.DB_ERRORS.inc()
                metrics.LEADER.set(0)
                reason = redact(f"{type(exc).__name__}: {exc}")
                self.ready, self.not_ready_reason = False, f"database unavailable: {reason}"
                log.warning("database_unavailable", error=reason, retry_in_s=backoff)
                await self._reset()
                delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF_S)
            except Exception as exc:  # a bug must not stop the supervisor: log, retry
                metrics.INTERNAL_ERRORS.inc()
                self.ready, self.not_ready_reason = False, f"internal error: {exc!r}"
                log.exception("sweep_failed")
                delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), delay)

    async def close(self) -> None:
        self.stop_event.set()
        await self.leadership.release()
        operator = self.operator
        if operator is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    async with operator.pool.acquire() as conn:
                        await supervisor_store.stopped(conn, self.instance)
        metrics.LEADER.set(0)
        await self._reset()
