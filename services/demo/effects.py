"""What the demo workflow's steps do to the world: rows in our schema, one per step.

Tests and benchmarks count these rows to prove that a step ran exactly once.
"""

from __future__ import annotations

import os

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.demo.schema import SCHEMA

_RECORD_STEP = sa.text(
    f"INSERT INTO {SCHEMA}.step_effects (workflow_id, step, executor_id, pid)"
    " VALUES (:workflow_id, :step, :executor_id, :pid)"
)


async def record_step_effect(
    session: AsyncSession, workflow_id: str, step: int, executor_id: str
) -> None:
    """The step's effect, inside the DBOS transaction that also records the step."""
    await session.execute(
        _RECORD_STEP,
        {"workflow_id": workflow_id, "step": step, "executor_id": executor_id, "pid": os.getpid()},
    )


class EffectsStore:
    def __init__(self, pool: asyncpg.Pool, executor_id: str) -> None:
        self._pool = pool
        self._executor_id = executor_id

    async def crashes_so_far(self, workflow_id: str, step: int) -> int:
        count = await self._pool.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.chaos_crashes WHERE workflow_id = $1 AND step = $2",
            workflow_id,
            step,
        )
        return int(count)

    async def record_crash(self, workflow_id: str, step: int, mode: str) -> None:
        await self._pool.execute(
            f"INSERT INTO {SCHEMA}.chaos_crashes (workflow_id, step, mode, executor_id)"
            " VALUES ($1, $2, $3, $4)",
            workflow_id,
            step,
            mode,
            self._executor_id,
        )
