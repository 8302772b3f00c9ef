"""Read-only SQL on DBOS's tables for the worker's API (DBOS's tables are never written here)."""

from __future__ import annotations

import asyncpg

from services.worker.schemas import DedupHolder

_NOW_MS = "(extract(epoch FROM now()) * 1000)"


class DbosReads:
    def __init__(self, pool: asyncpg.Pool, dbos_schema: str) -> None:
        self._pool = pool
        self._status = f'"{dbos_schema}".workflow_status'

    async def dedup_holder(self, queue: str, dedup_id: str) -> DedupHolder | None:
        """The workflow that holds a deduplication ID on a queue, if any."""
        row = await self._pool.fetchrow(
            f"""SELECT workflow_uuid, status, recovery_attempts, executor_id,
                       application_version, ({_NOW_MS} - created_at) / 1000.0 AS age
                FROM {self._status}
                WHERE queue_name = $1 AND deduplication_id = $2""",
            queue,
            dedup_id,
        )
        if row is None:
            return None
        return DedupHolder(
            workflow_id=row["workflow_uuid"],
            status=row["status"],
            recovery_attempts=int(row["recovery_attempts"] or 0),
            executor_id=row["executor_id"],
            application_version=row["application_version"],
            age_seconds=round(float(row["age"]), 3),
        )
