"""The demo job, shaped like the seed's: a parent runs N child workflows one after another,
each child runs M steps with a durable sleep between them. A hosted module
(`WORKER_APP=services.demo.job`, the default): see services/worker/hosting.py.

Each step commits its side effect (a row in `limbo_demo.step_effects`) in a DBOS
datasource transaction, in the same transaction as DBOS's record of the step, so it
happens exactly once even when the process is killed mid-step.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any, TypedDict

import asyncpg
import structlog
from dbos import DBOS, AsyncSQLAlchemyDatasource

from services.demo.chaos import ChaosMode, crash, freeze_interpreter, stall_event_loop
from services.demo.effects import EffectsStore, record_step_effect
from services.demo.metrics import STEPS_EXECUTED, WORKFLOWS_FINISHED
from services.demo.repository import WorkflowRepository
from services.demo.schema import migrate_demo
from services.demo.settings import DemoSettings
from services.shared.config import Env, load_fields
from services.shared.db import connect, create_pool
from services.worker.hosting import Host

PARENT_WORKFLOW = "limbo.job"
CHILD_WORKFLOW = "limbo.job_child"
STEP = "limbo.job_step"

log = structlog.get_logger(__name__)


class ChaosPlan(TypedDict):
    child: int
    step: int
    mode: ChaosMode
    times: int | None  # crash the first `times` executions; None: every one (a crash loop)


@dataclass
class Demo:
    """What the demo's workflows and routes need from the running worker."""

    settings: DemoSettings
    host: Host
    pool: asyncpg.Pool
    effects: EffectsStore
    repository: WorkflowRepository
    parent: Any = None  # the registered workflow functions
    child: Any = None

    @property
    def queue(self) -> Any:
        return self.host.queue(self.settings.queue_name)


_demo: Demo | None = None


def demo() -> Demo:
    if _demo is None:
        raise RuntimeError("the demo job ran before the worker set it up")
    return _demo


async def limbo_setup(host: Host) -> None:
    """Settings, the demo's tables and pool, its workflows, its queue and its routes."""
    global _demo
    if _demo is not None:
        raise RuntimeError("the demo job is set up once per process")
    from services.demo.api import DemoController

    settings = load_fields(DemoSettings, Env(host.environ))
    conn = await connect(host.database_url, application_name="limbo-demo-migrate")
    try:
        await migrate_demo(conn)
    finally:
        await conn.close()
    pool = await create_pool(host.database_url, application_name="limbo-demo", max_size=10)
    # Step effects commit through a DBOS datasource (tables in schema dbos_datasource).
    datasource = await AsyncSQLAlchemyDatasource.create(
        host.database_url, engine_kwargs={"pool_size": 10, "max_overflow": 10}
    )
    _demo = Demo(
        settings=settings,
        host=host,
        pool=pool,
        effects=EffectsStore(pool, host.executor_id),
        repository=WorkflowRepository(pool, STEP, host.dbos_schema),
    )
    _demo.parent, _demo.child = _declare_workflows(settings, datasource)
    host.declare_queue(
        settings.queue_name,
        worker_concurrency=settings.concurrency,
        polling_interval_sec=settings.poll_interval,
    )
    host.add_routes(DemoController)

    async def close() -> None:
        await datasource.engine.dispose()
        await pool.close()

    host.on_shutdown(close)


def _declare_workflows(
    settings: DemoSettings, datasource: AsyncSQLAlchemyDatasource
) -> tuple[Any, Any]:
    @datasource.transaction(name=STEP, isolation_level="READ COMMITTED")
    async def job_step(child: int, step: int, chaos: ChaosPlan | None, step_seconds: float) -> int:
        workflow_id = DBOS.workflow_id
        assert workflow_id is not None
        await _chaos_at(workflow_id, child, step, chaos)
        if step_seconds > 0:
            await asyncio.sleep(step_seconds)
        # The effect commits in the same transaction as DBOS's record of this step's
        # output: a crash before the commit undoes both, so a recovered step never repeats.
        await record_step_effect(
            datasource.sql_session(), workflow_id, step, demo().host.executor_id
        )
        STEPS_EXECUTED.inc()
        return step

    @DBOS.workflow(name=CHILD_WORKFLOW, max_recovery_attempts=settings.max_recovery_attempts)
    async def job_child(
        child: int, steps: int, chaos: ChaosPlan | None, step_seconds: float | None
    ) -> int:
        seconds = settings.step_seconds if step_seconds is None else step_seconds
        try:
            for step in range(steps):
                await job_step(child, step, chaos, seconds)
                if settings.sleep_seconds > 0 and step < steps - 1:
                    await DBOS.sleep_async(settings.sleep_seconds)
        except Exception:
            WORKFLOWS_FINISHED.labels(workflow=CHILD_WORKFLOW, status="ERROR").inc()
            raise
        WORKFLOWS_FINISHED.labels(workflow=CHILD_WORKFLOW, status="SUCCESS").inc()
        return steps

    @DBOS.workflow(name=PARENT_WORKFLOW, max_recovery_attempts=settings.max_recovery_attempts)
    async def job(
        children: int, steps: int, chaos: ChaosPlan | None, step_seconds: float | None
    ) -> dict[str, int]:
        log.info("job_started", children=children, steps=steps)
        try:
            for index in range(children):
                handle = await DBOS.start_workflow_async(
                    job_child, index, steps, chaos, step_seconds
                )
                await handle.get_result()
        except Exception:
            WORKFLOWS_FINISHED.labels(workflow=PARENT_WORKFLOW, status="ERROR").inc()
            raise
        log.info("job_finished", children=children, steps=steps)
        WORKFLOWS_FINISHED.labels(workflow=PARENT_WORKFLOW, status="SUCCESS").inc()
        return {"children": children, "steps": steps}

    return job, job_child


async def _chaos_at(workflow_id: str, child: int, step: int, chaos: ChaosPlan | None) -> None:
    if chaos is None or chaos["child"] != child or chaos["step"] != step:
        return
    effects = demo().effects
    times = chaos["times"]
    if times is not None and await effects.crashes_so_far(workflow_id, step) >= times:
        return
    log.warning("chaos", child=child, step=step, mode=chaos["mode"], pid=os.getpid())
    await effects.record_crash(workflow_id, step, chaos["mode"])
    if chaos["mode"] == "stall":
        stall_event_loop()
    elif chaos["mode"] == "freeze":
        freeze_interpreter()
    else:
        crash(chaos["mode"])
