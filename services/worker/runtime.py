"""Everything the running worker holds: its pool, DBOS, its queue, its heartbeat.

Started in the ASGI lifespan and stopped in reverse order. DBOS launches on the event
loop's own thread so that queued async workflows run on this loop; its blocking destroy
runs off the loop.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from dbos import DBOS, AsyncSQLAlchemyDatasource, DBOSConfig

from services.shared.db import connect, create_pool
from services.shared.schema import migrate
from services.worker.effects import EffectsStore
from services.worker.heartbeat import ExecutorIdentity, Heartbeat
from services.worker.repository import WorkflowRepository
from services.worker.settings import WorkerSettings
from services.worker.workflows import (
    STEP,
    JobRuntime,
    JobWorkflows,
    bind_runtime,
    register_workflows,
)

log = structlog.get_logger(__name__)


@dataclass
class WorkerRuntime:
    settings: WorkerSettings
    pool: asyncpg.Pool
    datasource: AsyncSQLAlchemyDatasource
    workflows: JobWorkflows
    heartbeat: Heartbeat
    repository: WorkflowRepository
    queue: Any = None
    launched: bool = False
    active: set[str] = field(default_factory=set)
    # DBOS installs its own pool as the loop's default executor and shuts it down in
    # destroy(): our blocking shutdown calls use a pool of our own.
    _blocking: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="limbo")
    )

    @classmethod
    async def start(cls, settings: WorkerSettings) -> WorkerRuntime:
        conn = await connect(settings.database_url, application_name="limbo-worker-migrate")
        try:
            await migrate(conn)
        finally:
            await conn.close()
        pool = await create_pool(
            settings.database_url, application_name="limbo-worker", max_size=10
        )
        # Step effects commit through a DBOS datasource, in the transaction that records the
        # step, so they happen exactly once (tables in schema dbos_datasource).
        datasource = await AsyncSQLAlchemyDatasource.create(
            settings.database_url, engine_kwargs={"pool_size": 10, "max_overflow": 10}
        )
        workflows = register_workflows(settings.max_recovery_attempts, datasource)
        identity = ExecutorIdentity(
            executor_id=settings.executor_id,
            application_name=settings.app_name,
            application_version=settings.app_version,
        )
        heartbeat = Heartbeat(
            settings.database_url, identity, workflows.registry, settings.heartbeat_interval
        )
        runtime = cls(
            settings=settings,
            pool=pool,
            datasource=datasource,
            workflows=workflows,
            heartbeat=heartbeat,
            repository=WorkflowRepository(pool, STEP),
        )
        bind_runtime(
            JobRuntime(
                effects=EffectsStore(pool, settings.executor_id),
                executor_id=settings.executor_id,
                default_step_seconds=settings.step_seconds,
                sleep_seconds=settings.sleep_seconds,
                active=runtime.active,
            )
        )
        # Beat before DBOS recovers or dequeues anything, so this executor is seen alive.
        heartbeat.start()
        await asyncio.get_running_loop().run_in_executor(
            runtime._blocking, heartbeat.registered.wait, 30.0
        )
        config: DBOSConfig = {
            "name": settings.app_name,
            "system_database_url": settings.database_url,
            "executor_id": settings.executor_id,
            "application_version": settings.app_version,
            "log_level": settings.log_level,
        }
        DBOS(config=config)
        DBOS.launch()  # on this loop's thread: queued async workflows run on this loop
        runtime.queue = await DBOS.register_queue_async(
            settings.queue_name,
            worker_concurrency=settings.worker_concurrency,
            # DBOS's default is 1 s, which caps a worker near concurrency jobs per second.
            polling_interval_sec=settings.queue_poll_interval,
            on_conflict="always_update",
        )
        runtime.launched = True
        log.info(
            "worker_started",
            queue=settings.queue_name,
            worker_concurrency=settings.worker_concurrency,
            max_recovery_attempts=settings.max_recovery_attempts,
        )
        return runtime

    async def stop(self) -> None:
        """Drain: stop dequeuing, let running workflows reach a durable point, then leave."""
        started = time.monotonic()
        self.launched = False
        timeout = self.settings.shutdown_timeout
        log.info("worker_draining", active=len(self.active), timeout=timeout)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._blocking, lambda: DBOS.destroy(workflow_completion_timeout_sec=timeout)
        )
        drained = not self.active
        # Mark ourselves stopped only when nothing runs here any more: the supervisor hands
        # a stopped executor's PENDING work over at once, and must never run it twice.
        await loop.run_in_executor(
            self._blocking, lambda: self.heartbeat.stop(mark_stopped=drained)
        )
        self._blocking.shutdown(wait=False)
        bind_runtime(None)
        await self.datasource.engine.dispose()
        await self.pool.close()
        log.info(
            "worker_stopped",
            drained=drained,
            still_active=sorted(self.active),
            seconds=round(time.monotonic() - started, 3),
        )
