"""`limbo.audit`: the record of every decision the supervisor or an operator carried out,
skipped or dry-ran. Written in the same transaction as the change it records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from limbo._migrations import SCHEMA, migrate
from services.supervisor.model import Outcome
from services.supervisor.store.connection import Conn

COMPONENT = "supervisor"
# Append only. Written to adopt the table of Limbo 0.1 (schema_version 1) as it is.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE IF NOT EXISTS {SCHEMA}.audit (
        id                bigserial PRIMARY KEY,
        at                timestamptz NOT NULL DEFAULT now(),
        actor             text NOT NULL,
        rule              text NOT NULL,
        action            text NOT NULL,
        workflow_id       text NOT NULL,
        outcome           text NOT NULL CHECK (outcome IN ('applied', 'skipped', 'dry_run')),
        dry_run           boolean NOT NULL,
        dedup_id_released text,
        reason            text,
        evidence          jsonb NOT NULL DEFAULT '{{}}'::jsonb
    );
    CREATE INDEX IF NOT EXISTS audit_workflow_idx ON {SCHEMA}.audit (workflow_id, id);
    CREATE INDEX IF NOT EXISTS audit_at_idx ON {SCHEMA}.audit (at);
    """,
    # 2: for the console. Every supervisor's heartbeat (who leads, who stands by: the leader
    # is whoever's lock connection holds the leadership lock, read from pg_locks), and the
    # leader's candidate counts over time (what the chart draws; pruned after two days).
    f"""
    CREATE TABLE IF NOT EXISTS {SCHEMA}.supervisors (
        instance         uuid PRIMARY KEY,
        actor            text NOT NULL,
        hostname         text NOT NULL,
        pid              integer NOT NULL,
        version          text NOT NULL,
        dry_run          boolean NOT NULL,
        role             text NOT NULL,
        lock_backend_pid integer,
        beat_ms          integer NOT NULL,
        started_at       timestamptz NOT NULL DEFAULT now(),
        last_seen_at     timestamptz NOT NULL DEFAULT now(),
        stopped_at       timestamptz
    );
    CREATE TABLE IF NOT EXISTS {SCHEMA}.candidate_samples (
        at            timestamptz NOT NULL DEFAULT now(),
        candidates    integer NOT NULL,
        by_rule       jsonb NOT NULL DEFAULT '{{}}'::jsonb,
        oldest_age_ms bigint
    );
    CREATE INDEX IF NOT EXISTS candidate_samples_at_idx ON {SCHEMA}.candidate_samples (at);
    """,
    # 3: executor rows forgotten after their retention (store/executors.py), one row each.
    f"""
    CREATE TABLE IF NOT EXISTS {SCHEMA}.executor_audit (
        id             bigserial PRIMARY KEY,
        at             timestamptz NOT NULL DEFAULT now(),
        actor          text NOT NULL,
        action         text NOT NULL CHECK (action IN ('forget')),
        executor_id    text NOT NULL,
        incarnation    uuid NOT NULL,
        state          text NOT NULL,
        dead_since     timestamptz,
        evidence       jsonb NOT NULL DEFAULT '{{}}'::jsonb
    );
    CREATE INDEX IF NOT EXISTS executor_audit_executor_idx
        ON {SCHEMA}.executor_audit (executor_id, id);
    """,
)


async def migrate_audit(conn: asyncpg.Connection) -> int:
    return await migrate(conn, COMPONENT, MIGRATIONS)


async def insert(
    conn: Conn,
    outcomes: Sequence[Outcome],
    *,
    actor: str,
    dry_run: bool,
    reasons: Sequence[str],
    evidence: Sequence[dict[str, Any]],
) -> dict[str, int]:
    """One audit row per outcome (in order); returns the audit ID of each workflow.

    The evidence travels as JSON text and becomes jsonb in the server: a jsonb[] parameter
    goes over the wire as one text-format array whose every element is quoted and escaped,
    which cost about 40 us a row to build and parse (half a large release's audit time)."""
    rows = await conn.fetch(
        f"""INSERT INTO {SCHEMA}.audit
                (actor, rule, action, workflow_id, outcome, dry_run, dedup_id_released,
                 reason, evidence)
            SELECT $1, r.rule, r.action, r.workflow_id, r.outcome, $2, r.released,
                   r.reason, r.evidence::jsonb
              FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                          $8::text[], $9::text[], $10::int[])
                   AS r(rule, action, workflow_id, outcome, released, reason, evidence, ord)
             ORDER BY r.ord
            RETURNING id, workflow_id""",
        actor,
        dry_run,
        [o.verdict.rule for o in outcomes],
        [o.verdict.action.value if o.verdict.action else "none" for o in outcomes],
        [o.verdict.workflow_id for o in outcomes],
        [o.outcome.value for o in outcomes],
        [o.dedup_id_released for o in outcomes],
        list(reasons),
        [msgspec.json.encode(e).decode() for e in evidence],
        list(range(len(outcomes))),
    )
    return {row["workflow_id"]: row["id"] for row in rows}


@dataclass(frozen=True)
class AuditFilter:
    workflow_id: str | None = None
    rule: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None  # keyset pagination, newest first


async def page(conn: Conn, where: AuditFilter, limit: int) -> list[dict[str, Any]]:
    """Audit entries matching every given filter, newest first."""
    rows = await conn.fetch(
        f"""SELECT id, at, actor, rule, action, workflow_id, outcome, dry_run,
                   dedup_id_released, reason, evidence
              FROM {SCHEMA}.audit
             WHERE ($1::text IS NULL OR workflow_id = $1)
               AND ($2::text IS NULL OR rule = $2)
               AND ($3::text IS NULL OR action = $3)
               AND ($4::text IS NULL OR outcome = $4)
               AND ($5::timestamptz IS NULL OR at >= $5)
               AND ($6::timestamptz IS NULL OR at < $6)
               AND ($7::bigint IS NULL OR id < $7)
             ORDER BY id DESC LIMIT $8""",
        where.workflow_id,
        where.rule,
        where.action,
        where.outcome,
        where.since,
        where.until,
        where.before_id,
        limit,
    )
    return [{**dict(row), "at": row["at"].isoformat()} for row in rows]
