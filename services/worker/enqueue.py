"""Enqueueing a workflow on a queue under a deduplication ID: one implementation for the
generic API and the demo's routes, with the 409 that names the workflow holding the ID."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from dbos import SetEnqueueOptions
from dbos._error import DBOSQueueDeduplicatedError
from litestar.plugins.problem_details import ProblemDetailsException

from services.worker.metrics import DEDUP_REJECTIONS, WORKFLOWS_ENQUEUED
from services.worker.schemas import DedupHolder

HolderLookup = Callable[[str, str], Awaitable[DedupHolder | None]]


async def enqueue(
    queue: Any,
    workflow: Any,
    *,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    dedup_id: str | None = None,
    priority: int | None = None,
    delay_seconds: float | None = None,
    holder_of: HolderLookup | None = None,
) -> str:
    """The new workflow's ID; 409 (problem details) when another holds `dedup_id`."""
    try:
        with SetEnqueueOptions(
            deduplication_id=dedup_id, priority=priority, delay_seconds=delay_seconds
        ):
            handle = await queue.enqueue_async(workflow, *args, **(kwargs or {}))
    except DBOSQueueDeduplicatedError:
        DEDUP_REJECTIONS.labels(queue=queue.name).inc()
        assert dedup_id is not None
        holder = None if holder_of is None else await holder_of(queue.name, dedup_id)
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
            extra={"dedup_id": dedup_id, "queue": queue.name, "holder": holder},
        ) from None
    WORKFLOWS_ENQUEUED.labels(queue=queue.name).inc()
    workflow_id: str = handle.workflow_id
    return workflow_id
