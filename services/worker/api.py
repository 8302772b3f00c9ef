"""The worker's generic HTTP API over the workflows it hosts, and its health.

- `GET /api/registry`: the declared workflows (with max_recovery_attempts) and the queues;
- `POST /api/queues/{queue}/workflows`: enqueue a workflow by name with JSON arguments,
  a dedup ID, a priority, a delay (202; 400 for an unknown workflow or queue or arguments
  that do not fit its signature; 409 naming the workflow that holds the dedup ID);
- `GET /api/workflows/{id}`: status, and the result or error once it ended;
- `POST /api/workflows/{id}/cancel` and `/resume`: through DBOS's own API.
"""

from __future__ import annotations

import inspect
from typing import Any

import asyncpg
import msgspec
from dbos import DBOS
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.response import Response
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE

from limbo import _dbos as limbo_dbos
from services.shared.auth import PUBLIC
from services.shared.db import ping
from services.worker.enqueue import enqueue
from services.worker.runtime import WorkerRuntime
from services.worker.schemas import (
    Enqueued,
    EnqueueWorkflow,
    Health,
    QueueInfo,
    Registry,
    Run,
    WorkflowType,
)


def runtime_of(state: State) -> WorkerRuntime:
    runtime: WorkerRuntime = state.runtime
    return runtime


def _bad_request(detail: str) -> ProblemDetailsException:
    return ProblemDetailsException(status_code=400, title="Bad request", detail=detail)


def _declared() -> dict[str, Any]:
    return limbo_dbos.declared_workflows(limbo_dbos.instance())


def _parameters(func: Any) -> list[str]:
    try:
        return list(inspect.signature(inspect.unwrap(func)).parameters)
    except (TypeError, ValueError):
        return []


def _jsonable(value: Any) -> Any:
    """A workflow's output as JSON when it is, else its repr (outputs are user data)."""
    try:
        return msgspec.json.decode(msgspec.json.encode(value))
    except (TypeError, msgspec.EncodeError):
        return repr(value)


async def _run(workflow_id: str) -> Run:
    status = await DBOS.get_workflow_status_async(workflow_id)
    if status is None:
        raise ProblemDetailsException(
            status_code=404, title="Unknown workflow", detail=f"no workflow {workflow_id!r}"
        )
    return Run(
        workflow_id=status.workflow_id,
        name=status.name,
        status=status.status,
        queue=status.queue_name,
        executor_id=status.executor_id,
        application_version=status.app_version,
        dedup_id=status.deduplication_id,
        created_at=None if status.created_at is None else status.created_at / 1000.0,
        updated_at=None if status.updated_at is None else status.updated_at / 1000.0,
        output=_jsonable(status.output) if status.status == "SUCCESS" else None,
        error=None
        if status.error is None
        else f"{type(status.error).__name__}: {status.error}"[:2000],
    )


class WorkflowApiController(Controller):
    path = "/api"
    tags = ["workflows"]

    @get("/registry")
    async def registry(self, state: State) -> Registry:
        """The workflows this worker declares, and its queues."""
        host = runtime_of(state).host
        limits = limbo_dbos.workflow_registry(limbo_dbos.instance())
        workflows = [
            WorkflowType(
                name=name, max_recovery_attempts=limits.get(name), parameters=_parameters(func)
            )
            for name, func in sorted(_declared().items())
        ]
        queues = [
            QueueInfo(
                name=name,
                worker_concurrency=queue._worker_concurrency,
                global_concurrency=queue._concurrency,
                polling_interval_sec=queue._polling_interval_sec,
            )
            for name, queue in sorted(host.queues.items())
        ]
        return Registry(workflows=workflows, queues=queues)

    @post("/queues/{queue_name:str}/workflows", status_code=HTTP_202_ACCEPTED)
    async def enqueue_workflow(
        self, queue_name: str, data: EnqueueWorkflow, state: State
    ) -> Enqueued:
        """Enqueue a declared workflow on a registered queue."""
        host = runtime_of(state).host
        if queue_name not in host.queues:
            known = ", ".join(sorted(host.queues)) or "none"
            raise _bad_request(f"unknown queue {queue_name!r} (registered: {known})")
        func = _declared().get(data.workflow)
        if func is None:
            raise _bad_request(f"unknown workflow {data.workflow!r} (see GET /api/registry)")
        try:
            inspect.signature(inspect.unwrap(func)).bind(*data.args, **data.kwargs)
        except TypeError as exc:
            raise _bad_request(f"arguments do not fit {data.workflow}: {exc}") from None
        workflow_id = await enqueue(
            host.queue(queue_name),
            func,
            args=data.args,
            kwargs=data.kwargs,
            dedup_id=data.dedup_id,
            priority=data.priority,
            delay_seconds=data.delay_seconds,
            holder_of=host.dedup_holder,
        )
        return Enqueued(
            workflow_id=workflow_id,
            workflow=data.workflow,
            queue=queue_name,
            status="DELAYED" if data.delay_seconds else "ENQUEUED",
            dedup_id=data.dedup_id,
        )

    @get("/workflows/{workflow_id:str}")
    async def status(self, workflow_id: str) -> Run:
        """A workflow's status, and its result or error once it ended."""
        return await _run(workflow_id)

    @post("/workflows/{workflow_id:str}/cancel", status_code=200)
    async def cancel(self, workflow_id: str) -> Run:
        """Cancel a workflow (DBOS's cancel: it stops at its next step; dedup ID released)."""
        await _run(workflow_id)
        await DBOS.cancel_workflow_async(workflow_id)
        return await _run(workflow_id)

    @post("/workflows/{workflow_id:str}/resume", status_code=200)
    async def resume(self, workflow_id: str) -> Run:
        """Resume a cancelled or failed workflow from its last step (DBOS's resume)."""
        await _run(workflow_id)
        await DBOS.resume_workflow_async(workflow_id)
        return await _run(workflow_id)


class HealthController(Controller):
    path = "/"
    tags = ["health"]
    opt = {PUBLIC: True}

    @get("/healthz")
    async def healthz(self) -> Health:
        """Liveness: the process serves requests. Touches nothing else."""
        return Health(ok=["process"], failing={})

    @get("/readyz")
    async def readyz(self, state: State) -> Response[Health]:
        """Readiness: DBOS launched, the database answering, the lease freshly renewed."""
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
            age = rt.protection.lease.age()
            limit = rt.settings.lease.grace_s
            if age <= limit:
                ok.append("lease")
            else:
                failing["lease"] = f"lease last confirmed {age:.1f}s ago (limit {limit:.1f}s)"
        body = Health(ok=ok, failing=failing)
        return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE if failing else 200)
