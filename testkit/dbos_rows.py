"""Building DBOS and liveness states by SQL, and an Operator over a test database."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg
import httpx

from limbo import LOCK_NAMESPACE
from services.shared.db import connect, create_pool
from services.supervisor.model import Outcome, Verdict
from services.supervisor.operating import Operator
from services.supervisor.rules import RuleSettings
from services.supervisor.settings import Settings
from services.supervisor.store.connection import NOW_MS
from services.supervisor.store.dbos_schema import inspect_schema
from services.supervisor.store.writes import apply
from testkit.localpg import free_port
from testkit.processes import ServiceProcess


async def columns(conn: asyncpg.Connection, schema: str = "dbos") -> set[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = $1 AND table_name = 'workflow_status'",
        schema,
    )
    return {row["column_name"] for row in rows}


async def insert_workflow(
    conn: asyncpg.Connection,
    workflow_id: str,
    *,
    status: str = "PENDING",
    name: str = "dbos_workflow",
    executor_id: str | None = "exec-a",
    version: str | None = "0.1.0",
    attempts: int = 1,
    queue: str | None = "example-queue",
    dedup: str | None = None,
    updated_ago_ms: int = 0,
    created_ago_ms: int = 60_000,
    app_name: str | None = None,
    parent: str | None = None,
    schema: str = "dbos",
) -> None:
    """One workflow_status row; 3.x-only columns are set only where they exist."""
    present = await columns(conn, schema)
    values: dict[str, Any] = {
        "workflow_uuid": workflow_id,
        "status": status,
        "name": name,
        "executor_id": executor_id,
        "application_version": version,
        "recovery_attempts": attempts,
        "queue_name": queue,
        "deduplication_id": dedup,
    }
    if "application_name" in present:
        values["application_name"] = app_name
    if "parent_workflow_id" in present:
        values["parent_workflow_id"] = parent
    names = list(values)
    placeholders = [f"${i}" for i in range(1, len(names) + 1)]
    n = len(names)
    sql = (
        f"INSERT INTO {schema}.workflow_status ({', '.join(names)}, created_at, updated_at, "
        f"started_at_epoch_ms) VALUES ({', '.join(placeholders)}, {NOW_MS} - ${n + 1}, "
        f"{NOW_MS} - ${n + 2}, CASE WHEN ${n + 3}::boolean THEN {NOW_MS} - ${n + 2} END)"
    )
    await conn.execute(sql, *values.values(), created_ago_ms, updated_ago_ms, status == "PENDING")


async def insert_step(
    conn: asyncpg.Connection,
    workflow_id: str,
    function_id: int,
    *,
    child: str | None = None,
    ago_ms: int = 60_000,
    schema: str = "dbos",
) -> None:
    await conn.execute(
        f"INSERT INTO {schema}.operation_outputs (workflow_uuid, function_id, function_name, "
        f"child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms) "
        f"VALUES ($1, $2, 'step', $3, {NOW_MS} - $4, {NOW_MS} - $4)",
        workflow_id,
        function_id,
        child,
        ago_ms,
    )


async def insert_executor(
    conn: asyncpg.Connection,
    executor_id: str,
    *,
    version: str = "0.1.0",
    app: str = "limbo",
    seen_ago_s: float = 0.0,
    started_ago_s: float = 3600.0,
    stopped: bool = False,
    lost: bool = False,
    lease_s: float | None = None,
    grace_s: float = 1.0,
    running: list[str] | None = None,
    report_ago_s: float = 0.0,
) -> None:
    """One executor of the liveness contract, built by SQL, in the state a test needs:

    - live (the default): lease valid (one hour unless `lease_s`), its session lock held by
      `conn` for as long as `conn` stays open;
    - `seen_ago_s` beyond its lease: expired, dead since its lease ended (`seen_ago_s` ago
      minus the lease);
    - `lost`: lease valid but its session lock free, first seen free and last beat
      `seen_ago_s` ago (dead when that exceeds the grace);
    - `stopped`: stopped gracefully `seen_ago_s` ago.
    `running` is its work report (made `report_ago_s` ago); None: it does not report.
    """
    if lease_s is None:
        lease_s = 5.0 if (seen_ago_s > 5.0 and not lost and not stopped) else 3600.0
    await conn.execute(
        """INSERT INTO limbo.executors AS e (executor_id, application_name,
               application_version, hostname, pid, incarnation, sdk, lease_ms, grace_ms,
               beat_ms, reports_work, running, report_at, started_at, last_seen_at,
               lease_expires_at, stopped_at, session_lost_seen_at)
           VALUES ($1, $2, $3, 'test', 1, gen_random_uuid(), 'test', $4::integer,
                   $5::integer, $6::integer, $7::text[] IS NOT NULL, $7::text[],
                   CASE WHEN $7::text[] IS NOT NULL
                        THEN now() - make_interval(secs => $8::float8) END,
                   now() - make_interval(secs => $9::float8),
                   now() - make_interval(secs => $10::float8),
                   CASE WHEN $11::boolean THEN now() - make_interval(secs => $10::float8)
                        ELSE now() - make_interval(secs => $10::float8)
                             + $4::integer * interval '1 ms' END,
                   CASE WHEN $11::boolean THEN now() - make_interval(secs => $10::float8) END,
                   CASE WHEN $12::boolean THEN now() - make_interval(secs => $10::float8) END)
           ON CONFLICT (executor_id) DO UPDATE SET
               incarnation = excluded.incarnation,
               application_version = excluded.application_version,
               lease_ms = excluded.lease_ms, grace_ms = excluded.grace_ms,
               reports_work = excluded.reports_work, running = excluded.running,
               report_at = excluded.report_at, started_at = excluded.started_at,
               last_seen_at = excluded.last_seen_at,
               lease_expires_at = excluded.lease_expires_at,
               stopped_at = excluded.stopped_at,
               session_lost_seen_at = excluded.session_lost_seen_at""",
        executor_id,
        app,
        version,
        round(lease_s * 1000),
        round(grace_s * 1000),
        min(250, round(grace_s * 500)),
        running,
        report_ago_s,
        started_ago_s,
        seen_ago_s,
        stopped,
        lost,
    )
    live = not (stopped or lost) and seen_ago_s < lease_s
    if live:
        await conn.execute(
            "SELECT pg_advisory_lock($1, lock_key) FROM limbo.executors WHERE executor_id = $2",
            LOCK_NAMESPACE,
            executor_id,
        )


async def release_executor_lock(conn: asyncpg.Connection, executor_id: str) -> None:
    """End a live fixture executor's session lock (as its process dying would)."""
    await conn.execute(
        "SELECT pg_advisory_unlock($1, lock_key) FROM limbo.executors WHERE executor_id = $2",
        LOCK_NAMESPACE,
        executor_id,
    )


async def publish(
    conn: asyncpg.Connection,
    name: str,
    max_attempts: int | None,
    *,
    version: str = "0.1.0",
    app: str = "limbo",
) -> None:
    await conn.execute(
        """INSERT INTO limbo.workflow_registry (application_name, application_version,
               workflow_name, max_recovery_attempts, published_by)
           VALUES ($1, $2, $3, $4, 'test')""",
        app,
        version,
        name,
        max_attempts,
    )


async def row(conn: asyncpg.Connection, workflow_id: str, schema: str = "dbos") -> dict[str, Any]:
    record = await conn.fetchrow(
        f"SELECT * FROM {schema}.workflow_status WHERE workflow_uuid = $1", workflow_id
    )
    assert record is not None, workflow_id
    return dict(record)


async def audit_rows(
    conn: asyncpg.Connection, workflow_id: str | None = None
) -> list[dict[str, Any]]:
    records = await conn.fetch(
        "SELECT * FROM limbo.audit_entries WHERE $1::text IS NULL OR workflow_id = $1 ORDER BY id",
        workflow_id,
    )
    return [dict(r) for r in records]


async def dump_dbos(conn: asyncpg.Connection, schema: str = "dbos") -> str:
    """Every row of DBOS's workflow and step tables, as one comparable string."""
    parts = []
    for table in ("workflow_status", "operation_outputs"):
        rows = await conn.fetch(f"SELECT to_jsonb(t) AS j FROM {schema}.{table} t")
        parts.append(json.dumps(sorted(json.dumps(r["j"], sort_keys=True) for r in rows)))
    return "\n".join(parts)


def settings_for(url: str, *, enabled: frozenset[str] | None = None, **rules: Any) -> Settings:
    defaults: dict[str, Any] = {"stall_timeout_ms": 5_000, "version_orphan_after_ms": 5_000}
    return Settings(
        database_url=url,
        actor="test",
        rules=RuleSettings.build(enabled, **{**defaults, **rules}),
    )


async def make_operator(
    url: str,
    *,
    schema: str = "dbos",
    settings: Settings | None = None,
    enabled: frozenset[str] | None = None,
    **rules: Any,
) -> Operator:
    settings = settings or replace(settings_for(url, enabled=enabled, **rules), dbos_schema=schema)
    conn = await connect(url, application_name="test")
    try:
        dbos = await inspect_schema(conn, schema)
    finally:
        await conn.close()
    pool = await create_pool(url, application_name="test-supervisor", max_size=2)
    return Operator(pool, dbos, settings)


async def insert_many_workflows(
    conn: asyncpg.Connection,
    prefix: str,
    count: int,
    *,
    name: str = "dbos_workflow",
    executor_id: str | None = "exec-a",
    version: str | None = "0.1.0",
    attempts: int = 1,
    queue: str | None = "example-queue",
    updated_ago_ms: int = 60_000,
    created_ago_ms: int = 120_000,
    stride_ms: int = 1,
) -> list[str]:
    """`count` PENDING rows `<prefix>-<n>` in one statement (3.x schema), each holding the
    dedup ID `<prefix>-<n>`, created `stride_ms` apart, oldest first. Returns their IDs."""
    ids = [f"{prefix}-{i}" for i in range(count)]
    await conn.execute(
        f"""INSERT INTO dbos.workflow_status (workflow_uuid, status, name, executor_id,
                application_version, recovery_attempts, queue_name, deduplication_id,
                created_at, updated_at, started_at_epoch_ms)
            SELECT id, 'PENDING', $2, $3, $4, $5, $6, id,
                   {NOW_MS} - $7 + ord * $9, {NOW_MS} - $8, {NOW_MS} - $8
              FROM unnest($1::text[]) WITH ORDINALITY AS t(id, ord)""",
        ids,
        name,
        executor_id,
        version,
        attempts,
        queue,
        created_ago_ms,
        updated_ago_ms,
        stride_ms,
    )
    return ids


async def act(operator: Operator, verdict: Verdict) -> Outcome:
    """Apply one verdict now, as the sweep would (guarded, audited as actor `test`)."""
    async with operator.pool.acquire() as conn:
        return await apply(conn, operator.schema, verdict, actor="test", dry_run=False)


def db(url: str, action: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    """Run one async action on a fresh connection, from synchronous test code."""

    async def _run() -> Any:
        conn = await connect(url, application_name="test")
        try:
            return await action(conn)
        finally:
            await conn.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_run())
    # A loop runs in this thread (Playwright's sync API keeps one): run it on another.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _run()).result()


def spawn_supervisor(
    spawn: Callable[..., ServiceProcess], url: str, name: str = "supervisor", **env: str
) -> tuple[ServiceProcess, str]:
    """The real supervisor process on a free port (not waited for); returns it and its URL."""
    port = free_port()
    proc = spawn(
        "services.supervisor",
        {
            "DATABASE_URL": url,
            "SUPERVISOR_PORT": str(port),
            "SUPERVISOR_HOST": "127.0.0.1",
            "SUPERVISOR_ACTOR": name,
            **env,
        },
        name=name,
    )
    return proc, f"http://127.0.0.1:{port}"


def metric_sum(base: str, prefix: str) -> float:
    """The sum of the supervisor's /metrics samples whose line starts with `prefix`."""
    text = httpx.get(f"{base}/metrics", timeout=5.0).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))
