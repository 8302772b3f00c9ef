"""`limbo.audit`: the record of every decision the supervisor or an operator carried out,
skipped or dry-ran. Written in the same transaction as the change it records. Read it
through the view `limbo.audit_entries`: a row's evidence there is whole (`limbo.audit`
keeps only what is the row's own; what its batch shared is in `limbo.audit_batch`)."""

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
    # 4: what every decision of one batch shared (the dead executor's state, the rule's
    # limits) is stored once, in audit_batch; each audit row keeps only its own evidence.
    # A mass release wrote ~1 KB of jsonb per row, half of it the same in every row, and
    # parsing it was half of the audit's cost. audit_entries shows each decision whole.
    f"""
    CREATE TABLE IF NOT EXISTS {SCHEMA}.audit_batch (
        id       bigserial PRIMARY KEY,
        at       timestamptz NOT NULL DEFAULT now(),
        evidence jsonb NOT NULL
    );
    ALTER TABLE {SCHEMA}.audit ADD COLUMN IF NOT EXISTS batch_id bigint;
    CREATE OR REPLACE VIEW {SCHEMA}.audit_entries AS
        SELECT a.id, a.at, a.actor, a.rule, a.action, a.workflow_id, a.outcome, a.dry_run,
               a.dedup_id_released, a.reason,
               coalesce(b.evidence, '{{}}'::jsonb) || a.evidence AS evidence, a.batch_id
          FROM {SCHEMA}.audit a LEFT JOIN {SCHEMA}.audit_batch b ON b.id = a.batch_id;
    COMMENT ON TABLE {SCHEMA}.audit_batch IS
        'The evidence every decision of one batch shared, stored once: audit.batch_id.';
    COMMENT ON VIEW {SCHEMA}.audit_entries IS
        'Every audited decision with its whole evidence: the batch''s merged with its own.';
    """,
)


async def migrate_audit(conn: asyncpg.Connection) -> int:
    return await migrate(conn, COMPONENT, MIGRATIONS)


def split_shared(
    evidence: Sequence[dict[str, Any]],
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(The top-level entries every record holds with the same JSON value, or None; each
    record without them). `shared | own` gives each record back, as audit_entries does."""
    if len(evidence) < 2:
        return None, list(evidence)
    first, rest = evidence[0], evidence[1:]
    shared: dict[str, Any] = {}
    for key, value in first.items():
        for record in rest:
            other = record.get(key, _MISSING)
            # Identity first: what a batch shares is mostly the very same object (the
            # rules build an executor's evidence once per snapshot).
            if other is not value and not _same(other, value):
                break
        else:
            shared[key] = value
    if not shared:
        return None, list(evidence)
    return shared, [{k: v for k, v in e.items() if k not in shared} for e in evidence]


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (in Python, 1 == True == 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, str | int | float):
        return bool(a == b)
    return msgspec.json.encode(a) == msgspec.json.encode(b)


async def insert(
    conn: Conn,
    outcomes: Sequence[Outcome],
    *,
    actor: str,
    dry_run: bool,
    reasons: Sequence[str],
    evidence: Sequence[dict[str, Any]],
) -> dict[str, int]:
    """One audit row per outcome (in order), and one audit_batch row for the evidence they
    all share; returns the audit ID of each workflow.

    The rows travel as one JSON text parameter, parsed once as jsonb, so each evidence is
    jsonb already: a jsonb[] parameter went over the wire as one text-format array whose
    every element is quoted and escaped (about 40 us a row), arrays of text cost asyncpg ABC
    checks per element, and json_to_recordset parses each nested evidence a second time
    (57 ms per 2,000 rows against 41 ms)."""
    shared, own = split_shared(evidence)
    records = [
        {
            "rule": o.verdict.rule,
            "action": o.verdict.action.value if o.verdict.action else "none",
            "workflow_id": o.verdict.workflow_id,
            "outcome": o.outcome.value,
            "released": o.dedup_id_released,
            "reason": reason,
            "evidence": own_evidence,
            "ord": ord_,
        }
        for ord_, (o, reason, own_evidence) in enumerate(zip(outcomes, reasons, own, strict=True))
    ]
    rows = await conn.fetch(
        f"""WITH batch AS (
                INSERT INTO {SCHEMA}.audit_batch (evidence)
                SELECT $3::text::jsonb WHERE $3::text IS NOT NULL RETURNING id)
            INSERT INTO {SCHEMA}.audit
                (actor, rule, action, workflow_id, outcome, dry_run, dedup_id_released,
                 reason, evidence, batch_id)
            SELECT $1, r.rule, r.action, r.workflow_id, r.outcome, $2, r.released,
                   r.reason, r.evidence, (SELECT id FROM batch)
              FROM jsonb_to_recordset($4::text::jsonb)
                   AS r(rule text, action text, workflow_id text, outcome text, released text,
                        reason text, evidence jsonb, ord int)
             ORDER BY r.ord
            RETURNING id, workflow_id""",
        actor,
        dry_run,
        None if shared is None else msgspec.json.encode(shared).decode(),
        msgspec.json.encode(records).decode(),
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
              FROM {SCHEMA}.audit_entries
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
