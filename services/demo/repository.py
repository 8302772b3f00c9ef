"""Read-only SQL on DBOS's tables for the demo's views (DBOS's tables are never written here)."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.demo.schemas import ChildView, QueuedWorkflow, StepView, WorkflowView


class WorkflowRepository:
    def __init__(self, pool: asyncpg.Pool, step_name: str, dbos_schema: str) -> None:
        self._pool = pool
        self._step_name = step_name
        self._schema = f'"{dbos_schema}"'

    async def workflow(self, workflow_id: str) -> WorkflowView | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT * FROM {self._schema}.workflow_status WHERE workflow_uuid = $1",
                workflow_id,
            )
            if row is None:
                return None
            children = await conn.fetch(
                f"""SELECT workflow_uuid, status, recovery_attempts, executor_id
                    FROM {self._schema}.workflow_status WHERE parent_workflow_id = $1
                    ORDER BY created_at, workflow_uuid""",
                workflow_id,
            )
            steps = await conn.fetch(
                f"""SELECT workflow_uuid, function_id, function_name, output IS NOT NULL
                           OR completed_at_epoch_ms IS NOT NULL AS completed, error
                    FROM {self._schema}.operation_outputs
                    WHERE workflow_uuid = ANY($1::text[]) AND function_name = $2
                    ORDER BY workflow_uuid, function_id""",
                [c["workflow_uuid"] for c in children],
                self._step_name,
            )
        by_child: dict[str, list[StepView]] = {}
        for step in steps:
            by_child.setdefault(step["workflow_uuid"], []).append(
                StepView(
                    function_id=step["function_id"],
                    name=step["function_name"],
                    completed=bool(step["completed"]) and step["error"] is None,
                    error=step["error"],
                )
            )
        return WorkflowView(
            **_summary(row),
            queue=row["queue_name"],
            error=_short_error(row["error"]),
            children=[
                ChildView(
                    workflow_id=c["workflow_uuid"],
                    status=c["status"],
                    recovery_attempts=int(c["recovery_attempts"] or 0),
                    executor_id=c["executor_id"],
                    steps=by_child.get(c["workflow_uuid"], []),
                )
                for c in children
            ],
        )

    async def queued(self, queue: str, limit: int = 1000) -> list[QueuedWorkflow]:
        rows = await self._pool.fetch(
            f"""SELECT workflow_uuid, name, status, recovery_attempts, executor_id,
                       application_version, deduplication_id, created_at, updated_at
                FROM {self._schema}.workflow_status
                WHERE queue_name = $1 AND status IN ('ENQUEUED', 'PENDING')
                ORDER BY created_at LIMIT $2""",
            queue,
            limit,
        )
        return [_queued(r) for r in rows]


def _queued(r: Any) -> QueuedWorkflow:
    return QueuedWorkflow(**_summary(r))


def _summary(r: Any) -> dict[str, Any]:
    """The fields every workflow view shares, from a workflow_status row."""
    return dict(
        workflow_id=r["workflow_uuid"],
        name=r["name"],
        status=r["status"],
        recovery_attempts=int(r["recovery_attempts"] or 0),
        executor_id=r["executor_id"],
        application_version=r["application_version"],
        dedup_id=r["deduplication_id"],
        created_at=r["created_at"] / 1000.0,
        updated_at=r["updated_at"] / 1000.0,
    )


def _short_error(error: str | None) -> str | None:
    # DBOS stores errors serialized; the API shows a bounded, readable prefix.
    if error is None:
        return None
    return error[:500]
