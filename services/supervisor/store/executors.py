"""`limbo.executors` as the supervisor reads it: through the contract's view, one reading
of liveness (see limbo/_contract.py), and the refused starts of duplicate executor IDs."""

from __future__ import annotations

from limbo._migrations import SCHEMA as AUDIT_SCHEMA
from services.supervisor.model import ExecutorRow, ExecutorState, RegistryEntry
from services.supervisor.model.schema import DbosSchema
from services.supervisor.rules.liveness import ms
from services.supervisor.store.connection import Conn

EXECUTORS_QUERY = f"""
    SELECT executor_id, incarnation::text AS incarnation, application_name,
           application_version, hostname, pid, sdk, state, lock_held, lease_ms, grace_ms,
           {ms("started_at")} AS started_at_ms, {ms("last_seen_at")} AS last_seen_ms,
           {ms("lease_expires_at")} AS lease_expires_ms, {ms("stopped_at")} AS stopped_at_ms,
           {ms("session_lost_seen_at")} AS session_lost_seen_ms,
           {ms("dead_since")} AS dead_since_ms, running, {ms("report_at")} AS report_at_ms
      FROM limbo.executor_liveness"""

REGISTRY_QUERY = """
    SELECT application_name, application_version, workflow_name, max_recovery_attempts
      FROM limbo.workflow_registry"""

# Duplicate executor IDs refused in the last 15 minutes, per executor ID.
RECENT_CONFLICTS_QUERY = """
    SELECT executor_id, count(*) AS refused, max(at) AS last_at
      FROM limbo.executor_conflicts WHERE at > now() - interval '15 minutes'
     GROUP BY executor_id ORDER BY executor_id"""


async def mark_lost_sessions(conn: Conn) -> int:
    """Stamp, once, the moment each executor's session lock is first seen free: the grace
    runs from there (the contract's own function; never waits on a locked row)."""
    return int(await conn.fetchval("SELECT limbo.mark_lost_sessions()"))


async def executors(conn: Conn) -> dict[str, ExecutorRow]:
    return {
        row["executor_id"]: ExecutorRow(
            executor_id=row["executor_id"],
            application_name=row["application_name"],
            application_version=row["application_version"],
            state=ExecutorState(row["state"]),
            incarnation=row["incarnation"],
            hostname=row["hostname"],
            pid=row["pid"],
            sdk=row["sdk"],
            lock_held=row["lock_held"],
            lease_ms=row["lease_ms"],
            grace_ms=row["grace_ms"],
            started_at_ms=row["started_at_ms"],
            last_seen_ms=row["last_seen_ms"],
            lease_expires_ms=row["lease_expires_ms"],
            stopped_at_ms=row["stopped_at_ms"],
            session_lost_seen_ms=row["session_lost_seen_ms"],
            dead_since_ms=row["dead_since_ms"],
            running=None if row["running"] is None else frozenset(row["running"]),
            report_at_ms=row["report_at_ms"],
        )
        for row in await conn.fetch(EXECUTORS_QUERY)
    }


async def registry(conn: Conn) -> tuple[RegistryEntry, ...]:
    return tuple(
        RegistryEntry(
            application_name=row["application_name"],
            application_version=row["application_version"],
            workflow_name=row["workflow_name"],
            max_recovery_attempts=row["max_recovery_attempts"],
        )
        for row in await conn.fetch(REGISTRY_QUERY)
    )


async def recent_conflicts(conn: Conn) -> dict[str, int]:
    return {
        row["executor_id"]: int(row["refused"]) for row in await conn.fetch(RECENT_CONFLICTS_QUERY)
    }


def may_forget(executor: ExecutorRow, now_ms: int, retention_ms: int) -> bool:
    """Whether `forget_dead_sql` could forget this executor as the snapshot saw it: the
    sweep skips the statement (a scan of in-flight rows) when no executor could qualify.
    The statement restates all of it, and the rest, at the write."""
    old = now_ms - retention_ms
    return (
        not executor.live
        and executor.dead_since_ms is not None
        and executor.dead_since_ms < old
        and executor.last_seen_ms < old
    )


def forget_dead_sql(schema: DbosSchema) -> str:
    """Forget executors dead (stopped, expired or lost) for longer than the retention ($1 ms)
    that hold no PENDING or ENQUEUED workflow, so dashboards and the dead-executor alert show
    the fleet that exists, not every pod that ever ran. The guard is on the row itself
    (same incarnation, not seen within the retention) so that PostgreSQL re-checks it if
    a new process re-registers the ID meanwhile; each deletion is audited in the same
    statement. Nothing that could still run work is forgotten: its workflows vetoed it."""
    return f"""
    WITH gone AS (
        DELETE FROM limbo.executors e
         USING limbo.executor_liveness l
         WHERE l.executor_id = e.executor_id
           AND e.incarnation = l.incarnation
           AND l.state IN ('stopped', 'expired', 'lost')
           AND l.dead_since < now() - $1::bigint * interval '1 ms'
           AND e.last_seen_at < now() - $1::bigint * interval '1 ms'
           AND NOT EXISTS (SELECT 1 FROM {schema.workflow_status} w
                            WHERE w.executor_id = e.executor_id
                              AND w.status IN ('PENDING', 'ENQUEUED'))
        RETURNING e.executor_id, e.incarnation, l.state, l.dead_since, e.hostname, e.pid,
                  e.application_name, e.application_version, e.last_seen_at
    )
    INSERT INTO {AUDIT_SCHEMA}.executor_audit
           (actor, action, executor_id, incarnation, state, dead_since, evidence)
    SELECT $2, 'forget', executor_id, incarnation, state, dead_since,
           jsonb_build_object('hostname', hostname, 'pid', pid,
                              'application_name', application_name,
                              'application_version', application_version,
                              'last_seen_at', last_seen_at, 'retention_ms', $1::bigint)
      FROM gone
    RETURNING executor_id, state"""


async def forget_dead(
    conn: Conn, schema: DbosSchema, *, retention_ms: int, actor: str
) -> list[tuple[str, str]]:
    """(executor_id, state) of each executor row forgotten (see `forget_dead_sql`)."""
    rows = await conn.fetch(forget_dead_sql(schema), retention_ms, actor)
    return [(row["executor_id"], row["state"]) for row in rows]
