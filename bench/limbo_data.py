"""DBOS system tables filled fast with SQL, and the supervisor opened the way the service does.

Rows are shaped like the worker's: parents `limbo.job` with one child `limbo.job_child`, each
with its `operation_outputs` row (the parent's child start, the child's step). History is a
realistic mix of terminal statuses; in-flight rows sit on live executors of the liveness
contract (lease valid, session lock held by the benchmark's connection for as long as it
stays open), and rows in limbo on an expired one (lease over a minute ago, claimed before
that), so the supervisor re-enqueues exactly those (the `orphaned` rule) and leaves every
other row alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from limbo import LeaseTiming
from services.shared.db import create_pool
from services.supervisor.operating import Operator
from services.supervisor.service import prepare
from services.supervisor.settings import Settings, load_settings
from testkit.dbos_rows import insert_executor

APP_NAME = "limbo"
APP_VERSION = "0.1.0"
QUEUE = "example-queue"
PARENT = "limbo.job"
CHILD = "limbo.job_child"
STEP = "limbo.job_step"
DEAD_EXECUTOR = "bench-dead"
LIVE_EXECUTORS = ("bench-live-0", "bench-live-1", "bench-live-2")
# The dead executor's last beat: its 5 s lease ended 55 s ago. Rows in limbo were claimed
# before that (DEAD_CLAIMED_AGO_MS), as the supervisor requires to hand them over.
DEAD_SEEN_AGO_S = 60.0
DEAD_CLAIMED_AGO_MS = 120_000
NOW_MS = "(extract(epoch FROM now()) * 1000)::bigint"

# Terminal mix of history, per 1000 rows: the rest are SUCCESS.
_HISTORY_STATUS = """CASE
    WHEN i % 1000 < 25 THEN 'ERROR'
    WHEN i % 1000 < 30 THEN 'CANCELLED'
    WHEN i % 1000 < 31 THEN 'MAX_RECOVERY_ATTEMPTS_EXCEEDED'
    ELSE 'SUCCESS' END"""


@dataclass
class OpenSupervisor:
    operator: Operator
    pool: asyncpg.Pool

    async def close(self) -> None:
        await self.pool.close()


def supervisor_defaults() -> Settings:
    """The supervisor's settings when nothing but the database is configured."""
    return load_settings({"DATABASE_URL": "postgresql://defaults@127.0.0.1/defaults"})


def describe_defaults() -> str:
    s = supervisor_defaults()
    lease = LeaseTiming()
    return (
        f"supervisor defaults: batch {s.batch_size} per sweep, poll {s.poll_interval:g} s, "
        f"liveness probe {s.liveness_poll_interval:g} s, scan limit {s.scan_limit}, "
        f"log summary above {s.log_summary_above} decisions; lease defaults: beat "
        f"{lease.beat_s:g} s, grace {lease.grace_s:g} s, lease {lease.lease_s:g} s"
    )


async def open_supervisor(url: str, **environ: str) -> OpenSupervisor:
    """The service's own pieces: settings from the environment, migrations and schema check,
    pool, Operator (whose `sweeper.sweep` is the service loop's call)."""
    settings = load_settings({"DATABASE_URL": url, "SUPERVISOR_ACTOR": "bench", **environ})
    schema = await prepare(settings, "limbo-bench")
    pool = await create_pool(url, application_name="limbo-supervisor", max_size=4)
    return OpenSupervisor(Operator(pool, schema, settings), pool)


async def register_executors(conn: asyncpg.Connection, *, reporting: bool = False) -> None:
    """Three live executors (their session locks held by `conn` while it stays open), a dead
    one (expired: lease over 55 s ago), and the registry. `reporting`: the live ones report
    their work, as the shipped worker does (`insert_live_pending` then reports their rows)."""
    for executor_id in LIVE_EXECUTORS:
        await insert_executor(
            conn, executor_id, app=APP_NAME, version=APP_VERSION, running=[] if reporting else None
        )
    await insert_executor(
        conn, DEAD_EXECUTOR, app=APP_NAME, version=APP_VERSION, seen_ago_s=DEAD_SEEN_AGO_S
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
    await report_live_work(conn)


async def report_live_work(conn: asyncpg.Connection) -> None:
    """Each live executor beats through the contract (on `conn`, which holds its lock) with
    the IDs of its PENDING rows as its work report; ignored by executors that do not report."""
    for row in await conn.fetch(
        """SELECT e.executor_id, e.incarnation,
                  (SELECT coalesce(array_agg(w.workflow_uuid), '{}') FROM dbos.workflow_status w
                    WHERE w.status = 'PENDING' AND w.executor_id = e.executor_id) AS running
             FROM limbo.executors e WHERE e.executor_id = ANY($1::text[])""",
        list(LIVE_EXECUTORS),
    ):
        await conn.execute(
            "SELECT limbo.executor_beat($1, $2, $3)",
            row["executor_id"],
            row["incarnation"],
            row["running"],
        )


async def insert_limbo(
    conn: asyncpg.Connection, count: int, prefix: str = "limbo", executor: str = DEAD_EXECUTOR
) -> None:
    """`count` rows (parents and their children) PENDING under `executor` (the dead one by
    default), claimed DEAD_CLAIMED_AGO_MS ago."""
    await insert_workflows(
        conn,
        prefix=prefix,
        start=0,
        stop=count,
        status_sql="'PENDING'",
        executor_sql=f"'{executor}'",
        age_ms=DEAD_CLAIMED_AGO_MS,
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


# The rows `in_limbo` counts and `any_in_limbo` looks for ($1 executor, $2 prefix).
_IN_LIMBO = (
    "FROM dbos.workflow_status"
    " WHERE status = 'PENDING' AND executor_id = $1 AND workflow_uuid LIKE $2 || '-%'"
)


async def in_limbo(
    conn: asyncpg.Connection, prefix: str = "limbo", executor: str = DEAD_EXECUTOR
) -> int:
    """Rows `prefix-*` still PENDING under `executor`."""
    count = await conn.fetchval(f"SELECT count(*) {_IN_LIMBO}", executor, prefix)
    return int(count)


async def any_in_limbo(
    conn: asyncpg.Connection, prefix: str = "limbo", executor: str = DEAD_EXECUTOR
) -> bool:
    """Whether any row `prefix-*` is still PENDING under `executor` (cheap while many are)."""
    found = await conn.fetchval(f"SELECT EXISTS (SELECT 1 {_IN_LIMBO})", executor, prefix)
    return bool(found)
