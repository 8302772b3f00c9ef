"""The worker's HTTP routes: jobs, the queue, and health."""

from __future__ import annotations

import asyncpg
from dbos import SetEnqueueOptions
from dbos._error import DBOSQueueDeduplicatedError
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.response import Response
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE

from services.shared.auth import PUBLIC
from services.shared.db import ping
from services.worker.metrics import DEDUP_REJECTIONS, WORKFLOWS_ENQUEUED
from services.worker.runtime import WorkerRuntime
from services.worker.schemas import (
    EnqueueRequest,
    EnqueueResponse,
    Health,
    QueueView,
    WorkflowView,
)
from services.worker.workflows import ChaosPlan


def runtime_of(state: State) -> WorkerRuntime:
    runtime: WorkerRuntime = state.runtime
    return runtime


class WorkflowController(Controller):
    path = "/"
    tags = ["workflows"]

    @post("/workflows", status_code=HTTP_202_ACCEPTED)
    async def enqueue(self, data: EnqueueRequest, state: State) -> EnqueueResponse:
        """Enqueue a job on the worker's queue under a deduplication ID."""
        rt = runtime_of(state)
        chaos: ChaosPlan | None = None
        if data.chaos is not None:
            if not rt.settings.chaos_enabled:
                raise ProblemDetailsException(
                    status_code=403,
                    title="Chaos refused",
                    detail="chaos requests are refused: this worker runs without WORKER_CHAOS=1",
                )
            chaos = {
                "child": data.chaos.child,
                "step": data.chaos.step,
                "mode": data.chaos.mode,
                "times": data.chaos.times,
            }
        dedup_id = data.dedup_id or f"{data.children}/{data.steps}"
        queue = rt.settings.queue_name
        try:
            with SetEnqueueOptions(deduplication_id=dedup_id):
                handle = await rt.queue.enqueue_async(
                    rt.workflows.parent, data.children, data.steps, chaos, data.step_seconds
                )
        except DBOSQueueDeduplicatedError:
            DEDUP_REJECTIONS.labels(queue=queue).inc()
            holder = await rt.repository.dedup_holder(queue, dedup_id)
            detail = (
                f"deduplication ID {dedup_id!r} is held by workflow {holder.workflow_id} "
                f"({holder.status}, {holder.recovery_attempts} attempts)"
                if holder
                else f"deduplication ID {dedup_id!r} is held by another workflow"
            )
            raise ProblemDetailsException(
                status_code=409,
                title="Deduplication ID in use",
                detail=detail,
                extra={"dedup_id": dedup_id, "queue": queue, "holder": holder},
            ) from None
        WORKFLOWS_ENQUEUED.labels(queue=queue).inc()
        # A new workflow ID is always inserted ENQUEUED; reading it back would cost DBOS's
        # observability transaction and a pool pre-ping per request (bench/: enqueue).
        return EnqueueResponse(
            workflow_id=handle.workflow_id, status="ENQUEUED", dedup_id=dedup_id, queue=queue
        )

    @get("/workflows/{workflow_id:str}")
    async def workflow(self, workflow_id: str, state: State) -> WorkflowView:
        """A workflow's status, attempts, executor, dedup ID, and its children's steps."""
        view = await runtime_of(state).repository.workflow(workflow_id)
        if view is None:
            raise ProblemDetailsException(
                status_code=404, title="Unknown workflow", detail=f"no workflow {workflow_id!r}"
            )
        return view

    @get("/queue")
    async def queue(self, state: State) -> QueueView:
        """The queue's ENQUEUED and PENDING workflows, oldest first."""
        rt = runtime_of(state)
        return QueueView(
            queue=rt.settings.queue_name,
            queued_workflows=await rt.repository.queued(rt.settings.queue_name),
        )


class HealthController(Controller):
    path = "/"
    tags = ["health"]
    opt = {PUBLIC: True}

    @get("/healthz")
    async def healthz(self) -> Health:
        """Liveness: the process serves requests. Touches nothing else."""
        return Health(ok=["process"], failing={})

    @get("/readyz")
    async def readyz(self, request: Request, state: State) -> Response[Health]:  # type: ignore[type-arg]
        """Readiness: DBOS launched and the database answering within a short timeout."""
        rt: WorkerRuntime | None = getattr(state, "runtime", None)
        ok: list[str] = []
        failing: dict[str, str] = {}
        if rt is not None and rt.launched:
            ok.append("dbos")
        else:
            failing["dbos"] = "DBOS is not launched"
        if rt is not None:
            timeout = rt.settings.readiness_timeout
            try:
                await ping(rt.pool, timeout)
                ok.append("database")
            except TimeoutError:
                failing["database"] = f"no answer within {timeout}s"
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                failing["database"] = f"unreachable: {type(exc).__name__}"
            age = rt.heartbeat.age()
            limit = max(3 * rt.settings.heartbeat_interval, 5.0)
            if age <= limit:
                ok.append("heartbeat")
            else:
                failing["heartbeat"] = f"last heartbeat {age:.1f}s ago (limit {limit:.0f}s)"
        body = Health(ok=ok, failing=failing)
        return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE if failing else 200)
