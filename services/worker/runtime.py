"""Everything the running worker holds: its pool, DBOS, the hosted apps, their queues, and
its protection (the lease; see limbo/).

Started in the ASGI lifespan in this order (stopped in reverse): migrations, DBOS's
configuration, the hosted modules (their workflows and queues), `limbo.protect()` (the
lease is held before DBOS recovers or dequeues anything), DBOS's launch on the serving
event loop (so queued async workflows run on it), the queues. DBOS's blocking destroy runs
off the loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import asyncpg
import structlog
from dbos import DBOS, DBOSConfig

import limbo
from services.shared.db import connect, create_pool
from services.worker import hosting
from services.worker.dbos_reads import DbosReads
from services.worker.hosting import Host
from services.worker.metrics import ACTIVE_WORKFLOWS, LEASE_AGE
from services.worker.settings import WorkerSettings

log = structlog.get_logger(__name__)


@dataclass
class WorkerRuntime:
    settings: WorkerSettings
    pool: asyncpg.Pool
    reads: DbosReads
    host: Host
    protection: limbo.Protection
    launched: bool = False
    # DBOS installs its own pool as the loop's default executor and shuts it down in
    # destroy(): our blocking shutdown calls use a pool of our own.
    _blocking: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="limbo")
    )

    @classmethod
    async def start(cls, settings: WorkerSettings) -> WorkerRuntime:
        conn = await connect(settings.database_url, application_name="limbo-worker-migrate")
        try:
            await limbo.migrate_contract(conn)
        finally:
            await conn.close()
        pool = await create_pool(
            settings.database_url, application_name="limbo-worker", max_size=10
        )
        reads = DbosReads(pool, settings.dbos_schema)
        config: DBOSConfig = {
            "name": settings.app_name,
            "system_database_url": settings.database_url,
            "executor_id": settings.executor_id,
            "application_version": settings.app_version,
            "dbos_system_schema": settings.dbos_schema,
            "log_level": settings.log_level,
        }
        DBOS(config=config)
        host = Host(
            database_url=settings.database_url,
            executor_id=settings.executor_id,
            application_name=settings.app_name,
            application_version=settings.app_version,
            dbos_schema=settings.dbos_schema,
            environ=dict(os.environ),
            dedup_holder=reads.dedup_holder,
        )
        await hosting.set_up(hosting.import_apps(settings.apps), host)
        # The lease before DBOS recovers or dequeues anything; refuses a second process
        # with this executor ID (ExecutorIdConflict names the holder).
        protection = await limbo.protect_async(timing=settings.lease, migrate=False)
        LEASE_AGE.set_function(protection.lease.age)
        ACTIVE_WORKFLOWS.set_function(lambda: len(protection.running()))
        runtime = cls(settings=settings, pool=pool, reads=reads, host=host, protection=protection)
        DBOS.launch()  # on this loop's thread: queued async workflows run on this loop
        await hosting.register_queues(host)
        runtime.launched = True
        log.info(
            "worker_started",
            apps=list(settings.apps),
            queues=sorted(host.queues),
            workflows=sorted(limbo._dbos.declared_workflows(limbo._dbos.instance())),
        )
        return runtime

    async def stop(self) -> None:
        """Drain: stop dequeuing, let running workflows reach a durable point, then leave."""
        started = time.monotonic()
        self.launched = False
        timeout = self.settings.shutdown_timeout
        log.info("worker_draining", active=len(self.protection.running()), timeout=timeout)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._blocking, lambda: DBOS.destroy(workflow_completion_timeout_sec=timeout)
        )
        # The lease ends only when nothing runs here any more: the supervisor hands a
        # stopped executor's PENDING work over at once, and must never run it twice.
        # Otherwise it is held until the process exits, and its work moves after the grace.
        released = await loop.run_in_executor(self._blocking, self.protection.stop)
        still = self.protection.report.active()
        self._blocking.shutdown(wait=False)
        await hosting.shut_down(self.host)
        await self.pool.close()
        log.info(
            "worker_stopped",
            drained=released,
            still_active=sorted(still),
            seconds=round(time.monotonic() - started, 3),
        )
