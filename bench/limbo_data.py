"""DBOS system tables filled fast with SQL, and the supervisor opened the way the service does.

Rows are shaped like the worker's: parents `limbo.job` with one child `limbo.job_child`, each
with its `operation_outputs` row (the parent's child start, the child's step). History is a
realistic mix of terminal statuses; in-flight rows sit on live executors (fresh heartbeats in
`limbo.executors`), and rows in limbo on a dead one, so the supervisor re-enqueues exactly
those (the `orphaned` rule) and leaves every other row alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from services.shared.db import create_pool
from services.supervisor.runner import prepare
from services.supervisor.settings import Settings, load_settings
from services.supervisor.sweeper import Supervisor

APP_NAME = "limbo"
APP_VERSION = "0.1.0"
QUEUE = "example-queue"
PARENT = "limbo.job"
CHILD = "limbo.job_child"
STEP = "limbo.job_step"
DEAD_EXECUTOR = "bench-dead"
LIVE_EXECUTORS = ("bench-live-0", "bench-live-1", "bench-live-2")
NOW_MS = "(extract(epoch FROM now()) * 1000)::bigint"

# Terminal mix of history, per 1000 rows: the rest are SUCCESS.
_HISTORY_STATUS = """CASE
    WHEN i % 1000 < 25 THEN 'ERROR'
    WHEN i % 1000 < 30 THEN 'CANCELLED'
    WHEN i % 1000 < 31 THEN 'MAX_RECOVERY_ATTEMPTS_EXCEEDED'
    ELSE 'SUCCESS' END"""


@dataclass
class OpenSupervisor:
    supervisor: Supervisor
    pool: asyncpg.Pool

    async def close(self) -> None:
        await self.pool.close()


def supervisor_defaults() -> Settings:
    """The supervisor's settings when nothing but the database is configured."""
    return load_settings({"DATABASE_URL": "postgresql://defaults@127.0.0.1/defaults"})


def describe_defaults() -> str:
    s = supervisor_defaults()
    return (
        f"supervisor defaults: batch {s.batch_size} per sweep, poll {s.poll_interval:g} s, "
        f"scan limit {s.scan_limit}, executor timeout {s.rules.executor_timeout_ms / 1000:g} s"
    )


async def open_supervisor(url: str, **environ: str) -> OpenSupervisor:
    """The service's own pieces: settings from the environment, schema check, pool, Supervisor."""
    settings = load_settings({"DATABASE_URL": url, **environ})
    schema = await prepare(settings, "limbo-bench")
    pool = await create_pool(url, application_name="limbo-supervisor", max_size=4)
    return OpenSupervisor(Supervisor(pool, schema, settings), pool)


async def register_executors(conn: asyncpg.Connection) -> None:
    """Three live executors and a dead one (last heartbeat an hour ago), and the registry."""
    await conn.execute(
        """INSERT INTO limbo.executors (executor_id, application_name, application_version,
               hostname, pid, incarnation, started_at, last_seen_at)
           SELECT e, $1, $2, 'bench', 1, gen_random_uuid(), now() - interval '1 day',
                  CASE WHEN e = $3 THEN now() - interval '1 hour' ELSE now() END
             FROM unnest($4::text[]) e
           ON CONFLICT (executor_id) DO UPDATE SET last_seen_at = excluded.last_seen_at""",
        APP_NAME,
        APP_VERSION,
        DEAD_EXECUTOR,
        [DEAD_EXECUTOR, *LIVE_EXECUTORS],
    )
    await conn.execute(
        """INSERT INTO limbo.workflow_registry (application_name, application_version,
               workflow_name, max_recovery_attempts, published_by)
           SELECT $1, $2, w, 2, 'bench' FROM unnest($3::text[]) w
           ON CONFLICT DO NOTHING""",
        APP_NAME,
        APP_VERSION,
        [PARENT, CHILD],
    )


async def refresh_live(conn: asyncpg.Connection) -> None:
    """Heartbeats of the live executors (what their workers would write)."""
    await conn.execute(
        "UPDATE limbo.executors SET last_seen_at = now() WHERE executor_id = ANY($1::text[])",
        list(LIVE_EXECUTORS),
    )


async def insert_workflows(
    conn: asyncpg.Connection,
    *,
    prefix: str,
    start: int,
    stop: int,
    status_sql: str,
    executor_sql: str,
    age_ms: int = 3_600_000,
) -> None:
    """Rows `prefix-i` for i in [start, stop): even i a parent, odd i its child (i - 1).

    `status_sql` and `executor_sql` are SQL expressions of `i`. In-flight rows keep their
    queue and dedup ID, terminal ones have them cleared (as DBOS does when a workflow ends).
    """
    await conn.execute(
        f"""
        INSERT INTO dbos.workflow_status (workflow_uuid, status, name, executor_id,
            application_version, application_name, recovery_attempts, queue_name,
            deduplication_id, created_at, updated_at, started_at_epoch_ms, completed_at,
            parent_workflow_id, inputs, output)
        SELECT w.id, w.status, w.name, {executor_sql}, $2, $3, 1,
               CASE WHEN w.in_flight AND w.parent THEN $4 END,
               CASE WHEN w.in_flight AND w.parent THEN w.id END,
               w.at, w.at + 500,
               CASE WHEN w.status <> 'ENQUEUED' THEN w.at + 100 END,
               CASE WHEN NOT w.in_flight THEN w.at + 500 END,
               CASE WHEN NOT w.parent THEN $1 || '-' || (i - 1) END,
               'gASVKAAAAAAAAAB9lCiMBGFyZ3OUKEsBSwFOR0BOAAAAAAAAdJSMBmt3YXJnc5R9lHUu',
               CASE WHEN w.status = 'SUCCESS' THEN 'gASVBAAAAAAAAABLAS4=' END
          FROM generate_series($5::bigint, $6::bigint - 1) i,
          LATERAL (SELECT $1 || '-' || i AS id, {status_sql} AS status,
                          ({status_sql}) IN ('PENDING', 'ENQUEUED') AS in_flight,
                          i % 2 = 0 AS parent,
                          CASE WHEN i % 2 = 0 THEN $7 ELSE $8 END AS name,
                          {NOW_MS} - $9::bigint + i % 1000 AS at) w
        """,
        prefix,
        APP_VERSION,
        APP_NAME,
        QUEUE,
        start,
        stop,
        PARENT,
        CHILD,
        age_ms,
    )
    await conn.execute(
        f"""
        INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name, output,
            child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, retention_timestamp)
        SELECT $1 || '-' || i, 1, CASE WHEN i % 2 = 0 THEN $2 ELSE $3 END, 'gASVBAAAAAAAAABLAS4=',
               CASE WHEN i % 2 = 0 THEN $1 || '-' || (i + 1) END,
               {NOW_MS} - $6::bigint, {NOW_MS} - $6::bigint + 100, {NOW_MS}
          FROM generate_series($4::bigint, $5::bigint - 1) i
        """,
        prefix,
        CHILD,
        STEP,
        start,
        stop,
        age_ms,
    )


async def insert_history(conn: asyncpg.Connection, start: int, stop: int) -> None:
    await insert_workflows(
        conn,
        prefix="h",
        start=start,
        stop=stop,
        status_sql=_HISTORY_STATUS,
        executor_sql="'bench-old-' || (i % 7)",
    )


async def insert_live_pending(conn: asyncpg.Connection, start: int, stop: int) -> None:
    """PENDING work on live executors: a parent and its running child per pair."""
    await insert_workflows(
        conn,
        prefix="live",
        start=start,
        stop=stop,
        status_sql="'PENDING'",
        executor_sql=f"(ARRAY{list(LIVE_EXECUTORS)!r})[1 + i % 3]",
        age_ms=60_000,
    )


async def insert_limbo(conn: asyncpg.Connection, count: int, prefix: str = "limbo") -> None:
    """`count` PENDING parents (with their children) under the dead executor."""
    await insert_workflows(
        conn,
        prefix=prefix,
        start=0,
        stop=count,
        status_sql="'PENDING'",
        executor_sql=f"'{DEAD_EXECUTOR}'",
        age_ms=120_000,
    )


async def reset_limbo(conn: asyncpg.Connection, prefix: str = "limbo") -> int:
    """Put released rows back in limbo (PENDING under the dead executor) for another sweep."""
    status = await conn.execute(
        """UPDATE dbos.workflow_status SET status = 'PENDING', executor_id = $2,
                   recovery_attempts = 1, owner_xid = NULL,
                   queue_name = CASE WHEN parent_workflow_id IS NULL THEN $3 END,
                   started_at_epoch_ms = created_at + 100, updated_at = created_at + 500
             WHERE workflow_uuid LIKE $1 || '-%' AND status <> 'PENDING'""",
        prefix,
        DEAD_EXECUTOR,
        QUEUE,
    )
    return int(status.split()[-1])


async def in_limbo(conn: asyncpg.Connection, prefix: str = "limbo") -> int:
    count = await conn.fetchval(
        """SELECT count(*) FROM dbos.workflow_status
            WHERE status = 'PENDING' AND executor_id = $1 AND workflow_uuid LIKE $2 || '-%'""",
        DEAD_EXECUTOR,
        prefix,
    )
    return int(count)
