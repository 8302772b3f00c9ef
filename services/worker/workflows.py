"""The demo job, shaped like the seed's: a parent runs N child workflows one after another,
each child runs M steps with a durable sleep between them.

Workflows are registered with DBOS at start-up (their `max_recovery_attempts` comes from
settings), before DBOS launches, so that recovery finds them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

import structlog
from dbos import DBOS, AsyncSQLAlchemyDatasource
from sqlalchemy.ext.asyncio import AsyncSession

from services.worker.chaos import ChaosMode, crash, stall_event_loop
from services.worker.effects import EffectsStore, record_step_effect
from services.worker.metrics import STEPS_EXECUTED, WORKFLOWS_FINISHED

PARENT_WORKFLOW = "limbo.job"
CHILD_WORKFLOW = "limbo.job_child"
STEP = "limbo.job_step"

log = structlog.get_logger(__name__)
T = TypeVar("T")


class ChaosPlan(TypedDict):
    child: int
    step: int
    mode: ChaosMode
    times: int | None  # crash the first `times` executions; None: every one (a crash loop)


@dataclass
class JobRuntime:
    """What the workflow bodies need from the running service."""

    effects: EffectsStore
    executor_id: str
    default_step_seconds: float
    sleep_seconds: float
    active: set[str]


_runtime: JobRuntime | None = None


def bind_runtime(runtime: JobRuntime | None) -> None:
    global _runtime
    _runtime = runtime


def _rt() -> JobRuntime:
    if _runtime is None:
        raise RuntimeError("workflow ran before the worker bound its runtime")
    return _runtime


async def _step_body(
    session: AsyncSession,
    workflow_id: str,
    child: int,
    step: int,
    chaos: ChaosPlan | None,
    step_seconds: float,
) -> int:
    rt = _rt()
    if chaos is not None and chaos["child"] == child and chaos["step"] == step:
        times = chaos["times"]
        if times is None or await rt.effects.crashes_so_far(workflow_id, step) < times:
            log.warning("chaos", child=child, step=step, mode=chaos["mode"])
            await rt.effects.record_crash(workflow_id, step, chaos["mode"])
            if chaos["mode"] == "stall":
                stall_event_loop()
            else:
                crash(chaos["mode"])
    if step_seconds > 0:
        await asyncio.sleep(step_seconds)
    # The effect commits in the same transaction as DBOS's record of this step's output:
    # a crash before the commit undoes both, so a recovered step never repeats the effect.
    await record_step_effect(session, workflow_id, step, rt.executor_id)
    STEPS_EXECUTED.inc()
    return step


@dataclass(frozen=True)
class JobWorkflows:
    """Handles to the registered workflow functions, and what the worker publishes of them."""

    parent: Any
    child: Any
    registry: dict[str, int | None]  # workflow name -> max_recovery_attempts


_registered: JobWorkflows | None = None


def register_workflows(
    max_recovery_attempts: int | None, datasource: AsyncSQLAlchemyDatasource
) -> JobWorkflows:
    """Define the job's workflows and step with DBOS (once per process).

    The step is a DBOS datasource transaction, so its database effect is exactly-once.
    """
    global _registered
    if _registered is not None:
        return _registered

    @datasource.transaction(name=STEP, isolation_level="READ COMMITTED")
    async def job_step(child: int, step: int, chaos: ChaosPlan | None, step_seconds: float) -> int:
        workflow_id = DBOS.workflow_id
        assert workflow_id is not None
        return await _step_body(
            datasource.sql_session(), workflow_id, child, step, chaos, step_seconds
        )

    @DBOS.workflow(name=CHILD_WORKFLOW, max_recovery_attempts=max_recovery_attempts)
    async def job_child(
        child: int, steps: int, chaos: ChaosPlan | None, step_seconds: float | None
    ) -> int:
        rt = _rt()
        seconds = rt.default_step_seconds if step_seconds is None else step_seconds
        return await _tracked(
            CHILD_WORKFLOW, _run_child(job_step, child, steps, chaos, seconds, rt.sleep_seconds)
        )

    @DBOS.workflow(name=PARENT_WORKFLOW, max_recovery_attempts=max_recovery_attempts)
    async def job(
        children: int, steps: int, chaos: ChaosPlan | None, step_seconds: float | None
    ) -> dict[str, int]:
        async def body() -> dict[str, int]:
            log.info("job_started", children=children, steps=steps)
            for index in range(children):
                handle = await DBOS.start_workflow_async(
                    job_child, index, steps, chaos, step_seconds
                )
                await handle.get_result()
            log.info("job_finished", children=children, steps=steps)
            return {"children": children, "steps": steps}

        return await _tracked(PARENT_WORKFLOW, body())

    _registered = JobWorkflows(
        parent=job,
        child=job_child,
        registry={PARENT_WORKFLOW: max_recovery_attempts, CHILD_WORKFLOW: max_recovery_attempts},
    )
    return _registered


async def _run_child(
    job_step: Any,
    child: int,
    steps: int,
    chaos: ChaosPlan | None,
    step_seconds: float,
    sleep_seconds: float,
) -> int:
    for step in range(steps):
        await job_step(child, step, chaos, step_seconds)
        if sleep_seconds > 0 and step < steps - 1:
            await DBOS.sleep_async(sleep_seconds)
    return steps


async def _tracked(name: str, body: Coroutine[Any, Any, T]) -> T:
    """Run a workflow body, counting its outcome and keeping it in the active set."""
    rt = _rt()
    workflow_id = DBOS.workflow_id or "?"
    rt.active.add(workflow_id)
    try:
        result = await body
    except asyncio.CancelledError:
        raise
    except Exception:
        WORKFLOWS_FINISHED.labels(workflow=name, status="ERROR").inc()
        raise
    finally:
        rt.active.discard(workflow_id)
    WORKFLOWS_FINISHED.labels(workflow=name, status="SUCCESS").inc()
    return result
